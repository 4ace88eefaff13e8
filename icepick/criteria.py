"""Pruning criteria: how the filters of a block's pruned convolution are ranked.

Every criterion gives one score per filter of a step's ranked convolution (``conv1``: a
ResNet block's first 3x3 convolution, a MobileNetV2 block's expansion; another CNN's group:
its first convolution, :func:`icepick.pruning.pruned_layers`); the ceil(r*C)
filters with the LOWEST scores are removed (:func:`icepick.pruning.filters_to_remove`).
The paper ranks by L1 norm (``l1``, the default); the others are for comparison
(docs/method.md, "Pruning criteria"):

- ``l1``: sum of |w| over the filter (Li et al. 2016; the paper).
- ``l2``: the filter's Euclidean norm.
- ``random``: uniform scores drawn from a generator seeded with the run's seed and step.
- ``bn_scale``: |gamma| of the BatchNorm after the convolution (network slimming).
- ``fpgm``: the filter's summed Euclidean distance to the block's other filters; the filters
  nearest the geometric median are the most replaceable (He et al. 2019).
- ``taylor``: first-order Taylor estimate of the loss change, sum of |w * dL/dw| over the
  filter, with the cross-entropy loss summed over a few training batches (Molchanov et al.).
- ``mean_activation``: the mean of the channel's activation (after its ReLU) over a few
  training batches (ICE-Pruning's activation criterion).
- ``entropy``: the entropy of the channel's average-pooled activation (after its ReLU) over
  the images of a few training batches (Luo and Wu 2017; ICE-Pruning's fourth criterion): a
  channel whose pooled value hardly varies from image to image carries little information.

The last three need data (:data:`DATA_CRITERIA`): batches of the training split, without
augmentation, in a seeded order. They only read the model: its weights, BN statistics,
train/eval modes and ``requires_grad`` flags are as before, so a run's evaluation caches stay
valid.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from icepick.config import ConfigError, check_choice

__all__ = [
    "CRITERIA",
    "DATA_CRITERIA",
    "l1_scores",
    "l2_scores",
    "random_scores",
    "bn_scale_scores",
    "fpgm_scores",
    "taylor_scores",
    "mean_activation_scores",
    "entropy_scores",
    "channel_entropy",
    "ENTROPY_BINS",
    "filter_scores",
    "check_criterion",
]

CRITERIA = ("l1", "l2", "random", "bn_scale", "taylor", "fpgm", "mean_activation", "entropy")
DATA_CRITERIA = frozenset({"taylor", "mean_activation", "entropy"})
#: Bins of the histogram ``entropy`` takes of each channel's pooled values (Luo and Wu 2017: 100).
ENTROPY_BINS = 100

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def l1_scores(conv: nn.Conv2d) -> torch.Tensor:
    """Sum of |w| over each output filter (input channels and kernel positions)."""
    return conv.weight.detach().abs().sum(dim=(1, 2, 3))


def l2_scores(conv: nn.Conv2d) -> torch.Tensor:
    """Euclidean norm of each output filter."""
    return conv.weight.detach().flatten(1).norm(dim=1)


def random_scores(n_filters: int, seed: int) -> torch.Tensor:
    """``n_filters`` uniform scores from a CPU generator seeded with ``seed`` (device-independent)."""
    return torch.rand(n_filters, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)


def bn_scale_scores(bn: nn.BatchNorm2d) -> torch.Tensor:
    """|gamma| of each channel of the BatchNorm that follows the pruned convolution."""
    return bn.weight.detach().abs()


def fpgm_scores(conv: nn.Conv2d) -> torch.Tensor:
    """Each filter's summed Euclidean distance to the other filters of the layer (float64).

    A filter near the layer's geometric median has a small sum: the others can stand in for it.
    """
    w = conv.weight.detach().flatten(1).double()
    return torch.cdist(w, w).sum(dim=1)


def _eval_with_flags(model: nn.Module) -> tuple[dict[str, bool], dict[str, bool]]:
    modes = {n: m.training for n, m in model.named_modules()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    model.eval()
    return modes, flags


def _restore(model: nn.Module, modes: dict[str, bool], flags: dict[str, bool]) -> None:
    for n, m in model.named_modules():
        m.training = modes[n]
    for n, p in model.named_parameters():
        p.requires_grad_(flags[n])


def taylor_scores(model: nn.Module, conv: nn.Conv2d, batches: Batches) -> torch.Tensor:
    """Sum over the filter of |w * g|, g the gradient of the summed cross-entropy over ``batches``.

    The model is evaluated in eval mode (its BN statistics do not move); only ``conv``'s weight
    needs a gradient, which is taken with :func:`torch.autograd.grad` (no ``.grad`` is left).
    """
    modes, flags = _eval_with_flags(model)
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        conv.weight.requires_grad_(True)
        grad = torch.zeros_like(conv.weight, dtype=torch.float64)
        with torch.enable_grad():
            for images, labels in batches:
                loss = F.cross_entropy(model(images), labels, reduction="sum")
                (g,) = torch.autograd.grad(loss, conv.weight)
                grad += g.double()
    finally:
        _restore(model, modes, flags)
    return (conv.weight.detach().double() * grad).abs().sum(dim=(1, 2, 3))


def mean_activation_scores(model: nn.Module, layer: nn.Module, batches: Batches) -> torch.Tensor:
    """Mean over images and positions of each channel's activation, ReLU(layer output), over ``batches``.

    ``layer`` is the BatchNorm after the ranked convolution (the convolution itself when it
    has none). Both block types of the paper apply a plain ReLU after ``bn1``, so the
    activation is the output clipped at zero, read with a forward hook in eval mode.
    """
    total: torch.Tensor | None = None
    count = 0

    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total, count
        act = output.detach().clamp(min=0).double()
        summed = act.sum(dim=(0, 2, 3)).cpu()
        total = summed if total is None else total + summed
        count += act.shape[0] * act.shape[2] * act.shape[3]

    modes, flags = _eval_with_flags(model)
    handle = layer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            for images, _labels in batches:
                model(images)
    finally:
        handle.remove()
        _restore(model, modes, flags)
    if count == 0 or total is None:
        raise ValueError("mean_activation: no batches to measure activations on")
    return total / count


def channel_entropy(pooled: torch.Tensor, bins: int = ENTROPY_BINS) -> torch.Tensor:
    """The entropy, in bits, of each column of ``pooled`` (``[N images, C channels]``), float64.

    Each channel's N values are put into ``bins`` equal bins between that channel's smallest
    and largest value (the largest in the last bin), and H = -sum p_i log2 p_i over the bins'
    shares p_i. A channel whose value is the same for every image has entropy 0; one whose N
    values fall into k bins equally often has log2(k).
    """
    if pooled.dim() != 2 or pooled.shape[0] == 0:
        raise ValueError(f"entropy: pooled activations must be [images, channels] with at least one image, got "
                         f"{tuple(pooled.shape)}")
    if bins < 1:
        raise ValueError(f"entropy: bins must be at least 1, not {bins}")
    values = pooled.detach().double().cpu()
    low, high = values.min(dim=0).values, values.max(dim=0).values
    width = (high - low) / bins
    spread = width > 0
    index = torch.zeros_like(values, dtype=torch.int64)
    index[:, spread] = ((values[:, spread] - low[spread]) / width[spread]).floor().long().clamp(0, bins - 1)
    counts = torch.zeros(values.shape[1], bins, dtype=torch.float64)
    counts.scatter_add_(1, index.T, torch.ones_like(index.T, dtype=torch.float64))
    share = counts / values.shape[0]
    logs = torch.where(share > 0, share.log2(), torch.zeros_like(share))
    return -(share * logs).sum(dim=1) + 0.0  # + 0.0: no -0.0 for a constant channel


def entropy_scores(model: nn.Module, layer: nn.Module, batches: Batches, bins: int = ENTROPY_BINS) -> torch.Tensor:
    """Luo and Wu's entropy criterion: each channel's activation, ReLU(``layer`` output) as for
    ``mean_activation``, average-pooled over its positions to one value per image; the entropy
    of those values over every image of ``batches`` (:func:`channel_entropy`, in bits). Read
    with a forward hook in eval mode; the lowest-entropy channels are removed first."""
    pooled: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        pooled.append(output.detach().clamp(min=0).double().mean(dim=(2, 3)).cpu())

    modes, flags = _eval_with_flags(model)
    handle = layer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            for images, _labels in batches:
                model(images)
    finally:
        handle.remove()
        _restore(model, modes, flags)
    if not pooled:
        raise ValueError("entropy: no batches to measure activations on")
    return channel_entropy(torch.cat(pooled), bins)


def filter_scores(
    model: nn.Module,
    conv: nn.Conv2d,
    bn: nn.BatchNorm2d | None,
    criterion: str,
    seed: int = 0,
    batches: Batches | None = None,
) -> torch.Tensor:
    """The score of each filter of ``conv`` (in ``model``, followed by ``bn`` or None) under
    ``criterion``; the lowest are removed first.

    ``seed`` seeds ``random``; ``batches`` (training batches) feed ``taylor``,
    ``mean_activation`` and ``entropy`` and are ignored by the others.
    """
    check_choice("criterion", criterion, CRITERIA)
    if criterion in DATA_CRITERIA and batches is None:
        raise ValueError(f"criterion: {criterion!r} ranks filters on training batches; none were given")
    if criterion == "l1":
        return l1_scores(conv)
    if criterion == "l2":
        return l2_scores(conv)
    if criterion == "random":
        return random_scores(conv.out_channels, seed)
    if criterion == "bn_scale":
        if bn is None:
            raise ConfigError("criterion: 'bn_scale' needs a BatchNorm right after the ranked convolution; "
                              "this one has none, choose another criterion")
        return bn_scale_scores(bn)
    if criterion == "fpgm":
        return fpgm_scores(conv)
    if criterion == "taylor":
        return taylor_scores(model, conv, batches)
    if criterion == "entropy":
        return entropy_scores(model, conv if bn is None else bn, batches)
    return mean_activation_scores(model, conv if bn is None else bn, batches)


def check_criterion(criterion: str, steps: Sequence[tuple[str, nn.BatchNorm2d | None]], model_name: str) -> None:
    """Refuse, before the first prune, a criterion that cannot rank every step: ``steps`` are the run's
    ``(step name, BatchNorm after its ranked convolution or None)``; ``bn_scale`` needs one in each.

    Raises ConfigError naming the criterion and the first step without one (a model without
    BatchNorm, as SqueezeNet, or a group whose first convolution has none after it).
    """
    check_choice("criterion", criterion, CRITERIA)
    if criterion != "bn_scale":
        return
    missing = [name for name, bn in steps if bn is None]
    if missing:
        more = f" (and {len(missing) - 1} more of its {len(steps)} steps)" if len(missing) > 1 else ""
        raise ConfigError(f"criterion: 'bn_scale' ranks filters by the BatchNorm after the pruned convolution, but "
                          f"step {missing[0]!r} of {model_name} has none{more}; choose another criterion "
                          f"(l1, l2, fpgm, ...)")
