"""Structured filter pruning of one block at a time, and model statistics (parameters, MACs).

Pruning follows the paper's convention (Li et al. 2016 for residual nets): in a block, the
filters of the first (ResNet) or expansion (MobileNetV2) convolution with the smallest L1
norms (or the lowest scores of another criterion, :mod:`icepick.criteria`) are removed together with everything that consumes them; the block's output
channels and its shortcut are never touched. Channels are removed physically through
Torch-Pruning's ``DependencyGraph``, so a pruned model is smaller and faster.

Any other CNN (a model spec, :mod:`icepick.models`) is pruned one *group* per step: its
pruning steps are found through the DependencyGraph, in forward order, as the groups of
coupled channels rooted at a convolution whose channels feed neither an element-wise
addition (a residual) nor the classifier, and are not the model's output (the paper's
convention: a block's inner width is pruned, its output and shortcut are not; a classifier
that is a convolution, as SqueezeNet's, keeps its class count); ``prunable_blocks(model,
coupled=True)`` also takes the groups that feed an addition. A group is named by its first
convolution in forward order, whose filters the criterion ranks; its width is that
convolution's filter count.

A group whose channels are the input or the filters of a grouped (not depthwise) convolution
with ``groups = g`` (RegNet, ResNeXt) is pruned in whole channel positions: the criterion's
scores are summed over the g channel groups and the same ⌈r·C/g⌉ positions go from every
channel group, so every group of the convolution keeps the same number of channels and
``groups`` stays valid (g·⌈r·C/g⌉ filters go). A group where that cannot be done (one channel
per channel group, or channels that reach the grouped convolution through a concatenation) is
not offered; :attr:`ConvGroup.refused` says why. After every prune the model must still map
one image to ``num_classes`` scores; otherwise the prune is undone and a ValueError names the
step.

Pruning replaces the pruned tensors by new ``nn.Parameter`` objects: an optimizer built
before a prune no longer sees them, so build a fresh optimizer afterwards. ``prune_block``
restores every parameter's ``requires_grad`` flag by name (pruned ones included), but
callers that freeze layers should still re-apply their freezing after every prune rather
than rely on object identity.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import torch
import torch.nn as nn

from icepick.criteria import l1_scores
from icepick.models import BasicBlock, InvertedResidual, main_output, model_input_shape

__all__ = [
    "prunable_blocks",
    "ConvGroup",
    "conv_groups",
    "pruned_layers",
    "shrink_to_widths",
    "block_width",
    "model_widths",
    "filters_to_remove",
    "prune_block",
    "conv_layers",
    "block_convs",
    "step_convs",
    "count_params",
    "count_macs",
    "layer_macs",
]


_BLOCK_TYPES = (BasicBlock, InvertedResidual)


# ------------------------------------------------------------------------- blocks


def _arch(model: nn.Module) -> str:
    return str(getattr(model, "arch_name", type(model).__name__))


def _is_family(model: nn.Module) -> bool:
    """Whether ``model`` is built of the paper's blocks (the registry's ResNets and MobileNetV2s)."""
    return any(isinstance(m, _BLOCK_TYPES) for m in model.modules())


def prunable_blocks(model: nn.Module, coupled: bool = False) -> list[tuple[str, nn.Module]]:
    """The pruning steps in forward order: ``(name, module)``.

    The paper's models: their blocks (ResNet BasicBlocks, MobileNetV2 inverted residuals).
    Any other CNN: its groups (:func:`conv_groups`) that feed no classifier, are not the
    model's output, can be pruned (:attr:`ConvGroup.refused` empty) and, unless ``coupled``,
    feed no element-wise addition, each as ``(name, its first convolution)``.
    """
    if _is_family(model):
        return [(name, m) for name, m in model.named_modules() if isinstance(m, _BLOCK_TYPES)]
    return [(g.name, model.get_submodule(g.name)) for g in conv_groups(model)
            if g.offered and (coupled or not g.coupled)]


def pruned_layers(model: nn.Module, block: nn.Module) -> tuple[nn.Conv2d, nn.BatchNorm2d | None]:
    """The convolution whose filters a step ranks, and the BatchNorm right after it (or None).

    A block of the paper's models: ``conv1``, ``bn1``. A group of another CNN: its first
    convolution and the BatchNorm registered right after it (:func:`conv_layers`).
    """
    if isinstance(block, _BLOCK_TYPES):
        return block.conv1, block.bn1
    for _, conv, bn in conv_layers(model):
        if conv is block:
            return conv, bn
    raise ValueError(f"{type(block).__name__} is not a convolution of {_arch(model)}")


def block_width(block: nn.Module) -> int:
    """A step's current width: the filters of ``conv1`` (a block) or of the group's convolution."""
    return int(block.out_channels if isinstance(block, nn.Conv2d) else block.conv1.out_channels)


def model_widths(model: nn.Module) -> dict[str, int]:
    """Step name -> width, in forward order (what ``build_model(widths=...)`` takes); for a
    spec model every group that feeds no classifier, coupled or not."""
    return {name: block_width(block) for name, block in prunable_blocks(model, coupled=True)}


# ----------------------------------------------------------------- any CNN: groups


@dataclass(frozen=True)
class ConvGroup:
    """A group of coupled channels of a CNN, as the DependencyGraph finds it."""

    name: str  # its first convolution in forward order (whose filters are ranked)
    convs: tuple[str, ...]  # every convolution it touches (filters or inputs), forward order
    coupled: bool  # its channels feed an element-wise addition or subtraction (a residual)
    classifier: bool  # its channels reach a Linear layer
    output: bool = False  # its channels are (part of) the model's output: a convolutional classifier
    channel_groups: int = 1  # filters go in equal numbers from this many channel groups (a grouped convolution)
    note: str = ""  # how a grouped convolution constrains it ("feeds grouped convolution X (groups=4): ...")
    refused: str = ""  # why it cannot be pruned at all ("" when it can)

    @property
    def offered(self) -> bool:
        """Whether it is a pruning step (coupled or not): it reaches neither the classifier nor the
        model's output, and a grouped convolution does not forbid it."""
        return not (self.classifier or self.output or self.refused)

    def reason(self) -> str:
        """Why a group is not a step, or how it is pruned: one phrase for ``icepick blocks``."""
        if self.output:
            return "not prunable: its channels are the model's output (a convolutional classifier)"
        if self.classifier:
            return "not prunable: feeds the classifier"
        if self.refused:
            return f"not prunable: {self.refused}"
        if self.coupled:
            return "feeds a residual addition: pruned only with --coupled" + (f"; {self.note}" if self.note else "")
        return self.note


@contextlib.contextmanager
def _traceable(model: nn.Module) -> Iterator[None]:
    """Eval mode, every parameter requiring grad, gradients on (what tracing needs); restored after."""
    modes = {n: m.training for n, m in model.named_modules()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    try:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(True)
        with torch.enable_grad():
            yield
    finally:
        for n, m in model.named_modules():
            if n in modes:
                m.training = modes[n]
        for n, p in model.named_parameters():
            if n in flags:
                p.requires_grad_(flags[n])


def _dependency_graph(model: nn.Module, example_input: torch.Tensor | None = None):
    """Torch-Pruning's DependencyGraph of ``model``, traced on one image of its input shape (call inside _traceable)."""
    import torch_pruning as tp

    param = next(model.parameters())
    shape = model_input_shape(model)
    if example_input is None:
        example_input = torch.randn(1, *shape, device=param.device, dtype=param.dtype)
    try:
        return tp.DependencyGraph().build_dependency(model, example_inputs=example_input, verbose=False)
    except Exception as err:  # a model Torch-Pruning cannot trace: one line naming it
        raise ValueError(f"model {_arch(model)}: Torch-Pruning cannot trace it on a {'x'.join(map(str, shape))} image "
                         f"({type(err).__name__}: {' '.join(str(err).split())[:160]})") from err


def _is_depthwise(conv: nn.Conv2d) -> bool:
    """One filter per input channel (Torch-Pruning couples its inputs to its filters)."""
    return conv.groups == conv.out_channels and conv.out_channels > 1


def _group_record(graph, group, order: dict[nn.Module, int], names: dict[nn.Module, str]) -> ConvGroup | None:
    from torch_pruning import ops

    ranked, touched, coupled, classifier, output = [], set(), False, False, False
    grouped: list[tuple[nn.Conv2d, int]] = []  # grouped convolutions it cuts: (conv, channels it cuts there)
    for dep, _ in group:
        module = dep.target.module
        if isinstance(module, ops._OutputOp):
            output = True
        elif isinstance(module, ops._ElementWiseOp):
            coupled |= str(module._grad_fn).lstrip("<").startswith(("Add", "Sub"))
        elif isinstance(module, nn.Linear):
            classifier = True
        elif isinstance(module, nn.Conv2d) and module in names:
            touched.add(module)
            depthwise = _is_depthwise(module)
            filters = graph.is_out_channel_pruning_fn(dep.handler)
            if filters and not depthwise:
                ranked.append(module)
            if module.groups > 1 and not depthwise:
                grouped.append((module, module.out_channels if filters else module.in_channels))
    if not ranked:
        return None
    first = min(ranked, key=order.__getitem__)
    convs = tuple(names[m] for m in sorted(touched, key=order.__getitem__))
    channel_groups, note, refused = _grouped_constraint(names[first], first.out_channels, grouped, names)
    return ConvGroup(names[first], convs, coupled, classifier, output, channel_groups, note, refused)


def _grouped_constraint(name: str, width: int, grouped: list[tuple[nn.Conv2d, int]],
                        names: dict[nn.Module, str]) -> tuple[int, str, str]:
    """``(channel_groups, note, refused)`` of group ``name`` (``width`` filters) that cuts the channels
    of the ``grouped`` convolutions: its filters must go in equal numbers, at the same positions, from
    every channel group of each (the ``math.lcm`` of their ``groups``), so that ``groups`` stays valid."""
    if not grouped:
        return 1, "", ""
    convs = sorted({names[c]: c for c, _ in grouped}.items())
    fed = [f"{n} (groups={c.groups})" for n, c in convs if n != name]
    parts = [f"is a grouped convolution (groups={c.groups})" for n, c in convs if n == name]
    if fed:
        parts.append(f"feeds grouped convolution{'s' if len(fed) > 1 else ''} {', '.join(fed)}")
    what = " and ".join(parts)
    for conv, channels in grouped:
        if channels != width:  # a concatenation or split between: its channel positions are not the group's
            return 1, "", f"{what}, through a concatenation or split ({channels} channels there, {width} here)"
    lcm = math.lcm(*(c.groups for _, c in convs))
    if width % lcm or width // lcm < 2:
        return 1, "", (f"{what}: its {width} channels make {lcm} channel groups of {width / lcm:g}, "
                       "which cannot shrink evenly")
    return lcm, f"{what}: pruned in multiples of {lcm}", ""


def conv_groups(model: nn.Module) -> list[ConvGroup]:
    """The pruning groups of a CNN rooted at its convolutions, in forward order of their names.

    Traced once per model object (the names stay valid as the model is pruned, so the result
    is kept on the model). Raises ValueError naming the model when it cannot be traced.
    """
    cached = model.__dict__.get("_icepick_conv_groups")
    if cached is not None:
        return list(cached)
    names = {m: n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    order = {m: i for i, m in enumerate(names)}
    with _traceable(model):
        graph = _dependency_graph(model)
        groups = [_group_record(graph, g, order, names) for g in graph.get_all_groups(root_module_types=[nn.Conv2d])]
    found = sorted({g.name: g for g in groups if g is not None}.values(),
                   key=lambda g: order[model.get_submodule(g.name)])
    model.__dict__["_icepick_conv_groups"] = tuple(found)
    return found


def shrink_to_widths(model: nn.Module, widths: dict[str, int]) -> None:
    """Cut a spec model's groups down to ``widths`` (keeping the first filters, or the first positions
    of every channel group where a grouped convolution needs it), so that the state dict of a pruned
    model of the same architecture loads into it. A group that is no step (a width recorded by an
    older icepick) is accepted at its full width."""
    import torch_pruning as tp

    groups = {g.name: g for g in conv_groups(model)}
    known = {name for name, _ in prunable_blocks(model, coupled=True)}
    unknown = sorted(name for name, width in widths.items() if name not in known and not (
        name in groups and width == model.get_submodule(name).out_channels))
    if unknown:
        raise ValueError(f"widths: unknown group name(s) {unknown} for {_arch(model)}")
    with _traceable(model):
        graph = _dependency_graph(model)
        for name, width in widths.items():
            conv = model.get_submodule(name)
            if width > conv.out_channels:
                raise ValueError(f"widths: {name!r} -> {width} exceeds its {conv.out_channels} filters")
            if width < conv.out_channels:
                graph.get_pruning_group(conv, tp.prune_conv_out_channels,
                                        idxs=_last_filters(name, conv.out_channels, width, groups[name])).prune()


def _last_filters(name: str, filters: int, width: int, group: ConvGroup) -> list[int]:
    """The filters to cut to leave ``width`` of ``filters``: the last ones, or the last positions of
    each of the group's channel groups."""
    g = group.channel_groups
    if width % g:
        raise ValueError(f"widths: {name!r} -> {width} is not a multiple of {g} ({group.note})")
    per, keep = filters // g, width // g
    return [b * per + i for b in range(g) for i in range(keep, per)]


def _resolve_block(model: nn.Module, block: int | str) -> tuple[str, nn.Module]:
    blocks = prunable_blocks(model, coupled=isinstance(block, str))
    if not blocks:
        raise ValueError(f"{_arch(model)} has no prunable blocks")
    if isinstance(block, bool) or not isinstance(block, (int, str)):
        raise ValueError(f"block: {block!r} must be a block index (int) or a block name (str)")
    if isinstance(block, int):
        if not 0 <= block < len(blocks):
            raise ValueError(
                f"block {block} is out of range; {_arch(model)} has {len(blocks)} prunable blocks "
                f"(0..{len(blocks) - 1})"
            )
        return blocks[block]
    for name, module in blocks:
        if name == block:
            return name, module
    names = [name for name, _ in blocks]
    shown = ", ".join(names) if len(names) <= 6 else f"{', '.join(names[:3])}, ..., {names[-1]}"
    raise ValueError(f"unknown block {block!r}; {_arch(model)} has blocks {shown}")


def _check_ratio(ratio: Any) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, Real) or not 0.0 < float(ratio) < 1.0:
        raise ValueError(f"ratio: {ratio!r} is out of range; it must lie in (0, 1)")
    return float(ratio)


def filters_to_remove(norms: torch.Tensor, ratio: float) -> torch.Tensor:
    """Sorted indices of the ceil(ratio*C) filters with the smallest scores (ties: lower index first).

    ``ratio * C`` is rounded before the ceiling (1e-9) so that float noise such as
    ``0.7 * 10 = 7.000000000000001`` does not remove an extra filter.
    """
    ratio = _check_ratio(ratio)
    total = int(norms.numel())
    n_remove = max(1, math.ceil(ratio * total - 1e-9))
    if n_remove >= total:
        raise ValueError(
            f"ratio {ratio} would remove {n_remove} of {total} filters; at least one filter must remain"
        )
    order = torch.sort(norms.detach().cpu().double(), stable=True).indices
    return torch.sort(order[:n_remove]).values.long()


# ------------------------------------------------------------------------ pruning


def prune_block(
    model: nn.Module,
    block: int | str,
    ratio: float,
    example_input: torch.Tensor | None = None,
    scores: torch.Tensor | None = None,
) -> torch.Tensor:
    """Prune one block in place and return the sorted indices of the KEPT filters.

    The filters removed are those with the smallest L1 norms (the paper), or with the lowest
    ``scores`` when given (one per filter of ``conv1``: :func:`icepick.criteria.filter_scores`).

    ResNet block: ``conv1`` filters, ``bn1`` channels, ``conv2`` input channels.
    MobileNetV2 block: expansion ``conv1`` filters, ``bn1``, depthwise ``conv2`` (and its
    groups), ``bn2``, and ``conv3`` input channels. Another CNN's group: its first
    convolution's filters and whatever the DependencyGraph couples to them. Removes
    ceil(ratio*C) filters; a group that cuts a grouped convolution's channels removes the
    same ceil(ratio*C/g) positions from each of its g channel groups (scores summed over them).

    The dependency graph is traced fresh on every call, in eval mode (no BN statistics
    change), with gradients enabled and every parameter temporarily requiring grad;
    afterwards each module's train/eval mode and each parameter's ``requires_grad`` (by
    name) are restored. Pruned tensors are new ``nn.Parameter`` objects: build a new
    optimizer after pruning.

    The pruned model must still give ``(N, num_classes)`` scores for ``example_input`` (default:
    one image of its input shape): a prune that breaks it is undone, every layer as before, and
    a ValueError names the step, so that a broken model is never returned.
    """
    import torch_pruning as tp

    ratio = _check_ratio(ratio)
    name, blk = _resolve_block(model, block)
    conv, _ = pruned_layers(model, blk)
    width = conv.out_channels
    if scores is None:
        scores = l1_scores(conv)
    elif scores.shape != (width,):
        raise ValueError(f"scores: {tuple(scores.shape)} does not match the {width} filters of {name}")
    removed = _removed_filters(scores, ratio, _channel_groups(model, blk, name))
    keep_mask = torch.ones(width, dtype=torch.bool)
    keep_mask[removed] = False
    kept = torch.nonzero(keep_mask).flatten().long()

    family = isinstance(blk, _BLOCK_TYPES)
    with _traceable(model):
        x = _probe_input(model, example_input)
        expected = _expected_output(model, x)
        graph = _dependency_graph(model, example_input)
        group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=removed.tolist())
        if family:
            _check_touched(model, name, group, _expected_pruned(blk))
        undo = _undo_point(model)
        try:
            group.prune()
            if family:
                _check_pruned(name, blk, width - len(removed))
            elif conv.out_channels != width - len(removed):
                raise RuntimeError(f"it left {conv.out_channels} filters, expected {width - len(removed)}")
            _check_output(model, x, expected)
        except Exception as err:
            undo()
            detail = " ".join(str(err).split())[:200]
            raise ValueError(f"pruning step {name!r} of {_arch(model)} breaks the model ({detail}); the prune was "
                             "undone, the model is as before: stop before this step (--max-steps), or make the layer "
                             "that breaks visible to tracing (a buffer or a shape taken from a constant cannot follow "
                             "a prune)") from err
    return kept


def _channel_groups(model: nn.Module, blk: nn.Module, name: str) -> int:
    """How many channel groups a step's filters go from in equal numbers (1 but for a grouped convolution's group)."""
    if isinstance(blk, _BLOCK_TYPES):
        return 1
    return next((g.channel_groups for g in conv_groups(model) if g.name == name), 1)


def _removed_filters(scores: torch.Tensor, ratio: float, channel_groups: int) -> torch.Tensor:
    """Sorted indices of the filters to remove: :func:`filters_to_remove`, or with ``channel_groups``
    g > 1 the same lowest-scoring positions (scores summed over the g groups) in every channel group."""
    if channel_groups == 1:
        return filters_to_remove(scores, ratio)
    per = scores.numel() // channel_groups
    try:
        positions = filters_to_remove(scores.detach().cpu().double().view(channel_groups, per).sum(dim=0), ratio)
    except ValueError as err:  # said per channel group: the positions are what the ratio applies to
        raise ValueError(f"{err} in each of its {channel_groups} channel groups (a grouped convolution)") from err
    return (positions[None, :] + per * torch.arange(channel_groups)[:, None]).flatten()


def _probe_input(model: nn.Module, example_input: torch.Tensor | None) -> torch.Tensor:
    """``example_input``, or one zero image of the model's input shape on its device."""
    if example_input is not None:
        return example_input
    param = next(model.parameters())
    return torch.zeros(1, *model_input_shape(model), device=param.device, dtype=param.dtype)


def _expected_output(model: nn.Module, x: torch.Tensor) -> tuple[int, ...]:
    """The output shape a pruned model must keep: ``(N, num_classes)``, or, for a model built
    without ``num_classes``, the shape it gives now."""
    num_classes = getattr(model, "num_classes", None)
    if isinstance(num_classes, int):
        return (int(x.shape[0]), num_classes)
    with torch.no_grad():
        out = main_output(model(x))
    return tuple(out.shape) if isinstance(out, torch.Tensor) else ()


def _check_output(model: nn.Module, x: torch.Tensor, expected: tuple[int, ...]) -> None:
    """Raise RuntimeError unless ``model`` (in eval mode) maps ``x`` to scores of shape ``expected``."""
    shape = "x".join(map(str, x.shape[1:]))
    try:
        with torch.no_grad():
            out = main_output(model(x))
    except Exception as err:  # noqa: BLE001 - any failure of the pruned model's forward pass
        raise RuntimeError(f"it no longer runs on a {shape} image: {type(err).__name__}: {err}") from err
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if got != expected:
        raise RuntimeError(f"it would give {got} for {x.shape[0]} {shape} image(s), not {expected}")


def _undo_point(model: nn.Module) -> Callable[[], None]:
    """A function that puts every module of ``model`` back as it is now (its attributes, parameter and
    buffer objects): Torch-Pruning replaces tensors and sizes but never edits a tensor in place."""
    saved = [(m, dict(m.__dict__), dict(m._parameters), dict(m._buffers)) for m in model.modules()]

    def undo() -> None:
        for module, attrs, params, buffers in saved:
            module.__dict__.clear()
            module.__dict__.update(attrs)
            module._parameters.clear()
            module._parameters.update(params)
            module._buffers.clear()
            module._buffers.update(buffers)

    return undo


def _check_touched(model: nn.Module, name: str, group, expected: set[nn.Module]) -> None:
    """Refuse a block's prune whose dependency group is not exactly the block's conv1 chain."""
    touched = {dep.target.module for dep, _ in group if isinstance(dep.target.module, nn.Module)}
    touched = {m for m in touched if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))}
    if touched != expected:
        mod2name = {m: n for n, m in model.named_modules()}
        raise RuntimeError(
            f"pruning {name}.conv1 would touch {sorted(mod2name.get(m, '?') for m in touched)}, "
            f"expected {sorted(mod2name.get(m, '?') for m in expected)}; refusing to prune"
        )


def _expected_pruned(blk: nn.Module) -> set[nn.Module]:
    """The layers a block's prune must touch (its conv1 chain and nothing else)."""
    if isinstance(blk, InvertedResidual):
        return {blk.conv1, blk.bn1, blk.conv2, blk.bn2, blk.conv3}
    return {blk.conv1, blk.bn1, blk.conv2}


def _check_pruned(name: str, blk: nn.Module, width: int) -> None:
    shapes = [blk.conv1.out_channels, blk.conv1.weight.shape[0], blk.bn1.num_features, blk.bn1.weight.shape[0]]
    if isinstance(blk, InvertedResidual):
        shapes += [blk.conv2.out_channels, blk.conv2.in_channels, blk.conv2.groups, blk.conv2.weight.shape[0],
                   blk.bn2.num_features, blk.conv3.in_channels, blk.conv3.weight.shape[1]]
    else:
        shapes += [blk.conv2.in_channels, blk.conv2.weight.shape[1]]
    if any(s != width for s in shapes):
        raise RuntimeError(f"pruning {name} left inconsistent shapes {shapes}; expected width {width}")


# ------------------------------------------------------------------ layers, stats


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d, nn.BatchNorm2d | None]]:
    """Every Conv2d in registration (= forward) order with the BN registered right after it, if any."""
    modules = list(model.named_modules())
    out = []
    for i, (name, m) in enumerate(modules):
        if isinstance(m, nn.Conv2d):
            bn = None
            if i + 1 < len(modules):
                nxt = modules[i + 1][1]
                if isinstance(nxt, nn.BatchNorm2d) and nxt.num_features == m.out_channels:
                    bn = nxt
            out.append((name, m, bn))
    return out


def step_convs(model: nn.Module, coupled: bool = False) -> dict[str, list[str]]:
    """Step name -> the convolutions its prune touches (filters or inputs), forward order."""
    if _is_family(model):
        return {name: [f"{name}.{c}" for c in ("conv1", "conv2", "conv3") if isinstance(getattr(blk, c, None), nn.Conv2d)]
                for name, blk in prunable_blocks(model)}
    groups = {g.name: list(g.convs) for g in conv_groups(model)}
    return {name: groups[name] for name, _ in prunable_blocks(model, coupled)}


def block_convs(model: nn.Module) -> list[str]:
    """Names of the convolutions on the main path of every prunable block, in forward order:
    a ResNet block's ``conv1``, ``conv2``; a MobileNetV2 block's ``conv1``, ``conv2``, ``conv3``
    (never the stem, a shortcut's 1x1 convolution or the final 1x1). Another CNN: every
    convolution its pruning steps touch."""
    touched = {c for convs in step_convs(model).values() for c in convs}
    return [name for name, _, _ in conv_layers(model) if name in touched]


def count_params(model: nn.Module) -> int:
    """Number of parameters (buffers excluded)."""
    return int(sum(p.numel() for p in model.parameters()))


def layer_macs(model: nn.Module, input_size: Sequence[int] | None = None) -> dict[str, int]:
    """Forward multiply-accumulates per image of every Conv2d and Linear, in call order, on a
    batch of ``input_size`` (default: one image of the model's ``input_shape``).

    Conv: output elements x (in_channels / groups) x kernel area; Linear: in x out features.
    Biases, BN, activations and pooling are not counted. Runs one forward pass under
    ``torch.no_grad`` in eval mode on the model's device; each module's mode is restored.
    """
    if input_size is None:
        input_size = (1, *model_input_shape(model))
    batch = int(input_size[0])
    names = {m: n for n, m in model.named_modules()}
    macs: dict[str, int] = {}

    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            per_out = (module.in_channels // module.groups) * math.prod(module.kernel_size)
            value = output.numel() // batch * per_out
        else:
            value = output.numel() // batch * module.in_features
        key = names[module]
        macs[key] = macs.get(key, 0) + int(value)

    param = next(model.parameters())
    modes = {n: m.training for n, m in model.named_modules()}
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(*input_size, device=param.device, dtype=param.dtype))
    finally:
        for h in handles:
            h.remove()
        for n, m in model.named_modules():
            if n in modes:
                m.training = modes[n]
    return macs


def count_macs(model: nn.Module, input_size: Sequence[int] | None = None) -> int:
    """Forward MACs per image (convs + linear), see :func:`layer_macs`."""
    return int(sum(layer_macs(model, input_size).values()))
