"""Test(.) of Algorithm 1: top-1 accuracy of a model on a device-resident split.

Evaluation runs on an inference copy of the model (:func:`fold_batchnorm`): eval mode, every
BatchNorm folded into the convolution before it, channels_last, under
``torch.inference_mode``. The copy computes the same function up to float rounding and costs
milliseconds; the model itself is left as it was.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from icepick.data import Split, eval_batches
from icepick.runtime import MEMORY_FORMAT, default_eval_batch_size, ensure_cpu_allocator, to_memory_format

__all__ = ["accuracy", "correct_count", "percent", "fold_batchnorm", "has_batchnorm"]

log = logging.getLogger(__name__)


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, module)


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode, channels_last copy of ``model`` with each BN folded into the conv before it.

    In eval mode a BN is a per-channel affine map with fixed statistics, so
    ``bn(conv(x)) == conv'(x)`` with ``W' = W * g / sqrt(var + eps)`` and
    ``b' = beta + (b - mean) * g / sqrt(var + eps)``: one pass over the activations fewer per
    layer. The pairs are the conv layers and the BN registered right after each
    (``icepick.pruning.conv_layers``); the copy is checked against the model on a small
    random batch, and when they disagree (a model whose BN does not follow its conv) the
    plain eval-mode copy is returned instead. Parameters of the copy do not require grad.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    from icepick.pruning import conv_layers

    folded = _inference_copy(model)
    names = {m: n for n, m in folded.named_modules()}
    for conv_name, conv, bn in conv_layers(folded):
        if bn is None or not bn.track_running_stats or bn.running_mean is None:
            continue
        _set_submodule(folded, conv_name, fuse_conv_bn_eval(conv, bn))
        _set_submodule(folded, names[bn], nn.Identity())
    to_memory_format(folded)
    for param in folded.parameters():
        param.requires_grad_(False)
    param = next(model.parameters(), None)
    if param is None:
        return folded
    probe = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(param.device, param.dtype)
    probe = probe.contiguous(memory_format=MEMORY_FORMAT)
    was_training = model.training
    try:
        model.eval()  # eval-mode BN reads its statistics and changes nothing
        with torch.inference_mode():
            want, got = model(probe), folded(probe)
    finally:
        model.train(was_training)
    scale = max(1.0, want.abs().max().item())
    if not torch.allclose(want, got, rtol=1e-3, atol=1e-4 * scale):
        log.warning("folding BatchNorm changed %s's outputs; evaluating it unfolded", type(model).__name__)
        return _inference_copy(model)
    return folded


def _inference_copy(model: nn.Module) -> nn.Module:
    """An eval-mode, channels_last copy of ``model`` whose parameters do not require grad."""
    copied = copy.deepcopy(model).eval()
    for param in copied.parameters():
        param.requires_grad_(False)
    return to_memory_format(copied)


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has a BatchNorm layer (False for a :func:`fold_batchnorm` copy of a CNN)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def correct_count(model: nn.Module, split: Split, batch_size: int | None = None) -> int:
    """Number of images of ``split`` that ``model`` (in eval mode) classifies correctly.

    Runs an inference copy (:func:`fold_batchnorm`) on channels_last batches under inference
    mode; ``model`` is not changed. ``batch_size`` None (or 0) picks the device's best
    (:func:`icepick.runtime.default_eval_batch_size`: 1000 on a GPU, 128 on a CPU); the count
    does not depend on it. Algorithm 1's threshold decisions are made on these counts.
    """
    ensure_cpu_allocator(split.device)
    batch_size = batch_size or default_eval_batch_size(split.device)
    net = fold_batchnorm(model)
    correct = torch.zeros((), dtype=torch.long, device=split.labels.device)
    with torch.inference_mode():
        for x, y in eval_batches(split, batch_size, MEMORY_FORMAT):
            correct += (net(x).argmax(dim=1) == y).sum()
    return int(correct.item())


def percent(correct: int, total: int) -> float:
    """``correct`` of ``total`` images as a top-1 accuracy in percent (0-100)."""
    return 100.0 * correct / max(total, 1)


def accuracy(model: nn.Module, split: Split, batch_size: int | None = None) -> float:
    """Top-1 accuracy in percent (0-100) of ``model`` in eval mode (:func:`correct_count`)."""
    return percent(correct_count(model, split, batch_size), len(split))
