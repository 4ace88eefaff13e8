"""Layer freezing (Section 3.2 and 4.1 of the paper).

The freeze trace measures how far each convolution's weights move when the model is
fine-tuned once after pruning its first block; the ``ceil(eta * N)`` layers that move least
are frozen (their conv and BN get ``requires_grad=False``) for the whole pruning run.
N counts the convolutions inside the prunable blocks by default, as the authors' trace does
(``freeze_layers='blocks'``: ResNet-110 108, MobileNetV2 51); ``'all'`` counts every
convolution (stem, 1x1 shortcut convolutions and MobileNetV2's final 1x1 too).

Layers are identified by name, because pruning replaces parameters: re-apply the freezing
after every prune.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from icepick.config import check_choice, check_range
from icepick.pruning import block_convs, conv_layers

#: Which convolutions the freeze trace's scores are ranked over (N of ceil(eta * N)).
FREEZE_LAYERS = ("blocks", "all")

__all__ = [
    "weight_l1",
    "weight_l2",
    "layer_shifts",
    "FREEZE_LAYERS",
    "select_frozen",
    "scored_layers",
    "choose_frozen",
    "trace_scores",
    "apply_freezing",
    "frozen_batchnorms_to_eval",
    "trainable_fraction",
    "training_macs_per_sample",
    "layer_trainable",
]


def weight_l1(model: nn.Module) -> dict[str, float]:
    """L1 norm of every conv layer's weight, by layer name, in forward order."""
    return {name: conv.weight.detach().abs().sum().item() for name, conv, _ in conv_layers(model)}


def weight_l2(model: nn.Module) -> dict[str, float]:
    """L2 norm of every conv layer's weight, by layer name, in forward order."""
    return {name: conv.weight.detach().norm(2).item() for name, conv, _ in conv_layers(model)}


def layer_shifts(
    l1_before: Mapping[str, float], l1_after: Mapping[str, float], l2_orig: Mapping[str, float]
) -> dict[str, float]:
    """Weight shift of each layer: | ||W_after||_1 - ||W_before||_1 | / ||W_orig||_2.

    ``before`` is the layer right after the prune, ``after`` after the fine-tuning, and
    ``orig`` the unpruned, pretrained layer (the normaliser makes layers of different
    sizes comparable).
    """
    return {name: abs(l1_after[name] - l1_before[name]) / max(l2_orig[name], 1e-12) for name in l1_after}


def select_frozen(scores: Mapping[str, float], eta: float) -> list[str]:
    """The ``ceil(eta * N)`` layers with the smallest scores (ties: the earlier layer first).

    Returns the names in forward order (the order of ``scores``).
    """
    check_range("eta", eta, 0.0, 1.0)
    names = list(scores)
    count = math.ceil(eta * len(names) - 1e-9)
    ranked = sorted(range(len(names)), key=lambda i: (scores[names[i]], i))
    chosen = set(ranked[:count])
    return [name for i, name in enumerate(names) if i in chosen]


def scored_layers(model: nn.Module, scope: str = "blocks") -> list[str]:
    """The convolutions freezing ranks, in forward order: those inside the prunable blocks
    (``'blocks'``, the authors' trace) or every convolution (``'all'``)."""
    check_choice("freeze_layers", scope, FREEZE_LAYERS)
    if scope == "all":
        return [name for name, _, _ in conv_layers(model)]
    return block_convs(model)


def choose_frozen(model: nn.Module, scores: Mapping[str, float], eta: float, scope: str = "blocks") -> list[str]:
    """Freeze(M, eta): the ``ceil(eta * N)`` lowest-scoring of the N layers ``scope`` names.

    ``scores`` (a freeze trace's, by layer name) must cover every one of those layers.
    """
    names = scored_layers(model, scope)
    missing = [name for name in names if name not in scores]
    if missing:
        raise ValueError(
            f"the freeze trace has no score for {missing[:3]}{' ...' if len(missing) > 3 else ''}; "
            "it was written for another model: rerun `icepick trace` for this one"
        )
    return select_frozen({name: scores[name] for name in names}, eta)


def trace_scores(trace: Mapping[str, Any]) -> dict[str, float]:
    """Layer name -> weight-shift score, in forward order, from a freeze trace record
    (``icepick trace``'s JSON: ``{"layers": [{"layer": ..., "score": ...}, ...]}``)."""
    return {row["layer"]: float(row["score"]) for row in trace["layers"]}


def apply_freezing(model: nn.Module, frozen: Sequence[str]) -> None:
    """Freeze the named conv layers and their BNs; every other parameter is made trainable.

    Frozen convs and BNs get ``requires_grad=False`` (and no ``.grad``), so autograd builds no
    weight-gradient work for them and no graph at all upstream of the first trainable layer.
    Unknown names raise ValueError.
    """
    layers = {name: (conv, bn) for name, conv, bn in conv_layers(model)}
    unknown = sorted(set(frozen) - set(layers))
    if unknown:
        raise ValueError(f"cannot freeze unknown layers {unknown}; the model's conv layers are {list(layers)}")
    for param in model.parameters():
        param.requires_grad_(True)
    for name in frozen:
        conv, bn = layers[name]
        for module in (conv, bn):
            if module is None:
                continue
            for param in module.parameters(recurse=False):
                param.requires_grad_(False)
                param.grad = None


def frozen_batchnorms_to_eval(model: nn.Module, frozen: Sequence[str]) -> None:
    """Put the BNs of frozen layers in eval mode so their running statistics stay fixed.

    Optional (the authors' code lets the statistics of frozen layers keep updating).
    Call after ``model.train()``.
    """
    layers = {name: bn for name, _, bn in conv_layers(model)}
    for name in frozen:
        if layers.get(name) is not None:
            layers[name].eval()


def trainable_fraction(model: nn.Module) -> float:
    """Trainable parameters / all parameters."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable / total if total else 0.0


def training_macs_per_sample(
    layer_macs: Mapping[str, int], trainable: Mapping[str, bool], teacher_macs: int = 0
) -> int:
    """MACs of one training sample given which layers train (the work backward really needs).

    Forward: every layer. Backward: a weight gradient (as many MACs as its forward) for each
    trainable layer, and an input gradient for each layer that has a trainable layer before
    it in forward order (the gradient must flow through it). A frozen prefix therefore costs
    forward work only. Plus the teacher's forward pass, which the distillation term runs on
    every fine-tuning batch.

    Args:
        layer_macs: forward MACs per layer, in forward order.
        trainable: layer name -> whether its weights train (missing names count as trainable).
        teacher_macs: forward MACs per sample of the KD teacher (0 without distillation).
    """
    total = int(teacher_macs)
    seen_trainable = False
    for name, macs in layer_macs.items():
        total += macs  # forward
        is_trainable = trainable.get(name, True)
        if is_trainable:
            total += macs  # weight gradient
        if seen_trainable:
            total += macs  # input gradient towards an earlier trainable layer
        seen_trainable = seen_trainable or is_trainable
    return total


def layer_trainable(model: nn.Module) -> dict[str, bool]:
    """Module name -> whether its own weight trains, for every conv and linear layer."""
    return {
        name: bool(module.weight.requires_grad)
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear))
    }
