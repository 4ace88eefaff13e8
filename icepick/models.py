"""The paper's models: CIFAR ResNets (option-A shortcuts) and the CIFAR MobileNetV2; and any CNN.

Every model is built by :func:`build_model` from a registry name, or from a model spec:

- ``torchvision:<name>``: a torchvision classification builder (``torchvision.models.get_model``,
  no pretrained weights, the data's number of classes);
- ``python:<module>:<factory>``: a user's own ``nn.Module`` factory, called as
  ``factory(num_classes=...)`` (the module importable from the working directory).

A pruned model is described by its *widths*: a map from a prunable block's name (as in
``named_modules()``) to that block's hidden width (ResNet: ``conv1`` filters; MobileNetV2:
expansion channels; a spec model: a pruning group's convolution and its filters,
:mod:`icepick.pruning`), so ``build_model(name, num_classes, widths)`` rebuilds a pruned
architecture exactly.

Facts followed (not code): He et al. 2016 CIFAR ResNet, depth 6n+2, widths 16/32/64,
parameter-free shortcut (spatial subsampling + zero channel padding); the common CIFAR
MobileNetV2 (stem stride 1, second stage stride 1, 1x1 conv+BN shortcut where a stride-1
block changes the channel count, 4x4 average pool).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from icepick.config import ConfigError
from icepick.grid import is_model_name, is_model_spec

__all__ = [
    "PadShortcut",
    "BasicBlock",
    "CifarResNet",
    "InvertedResidual",
    "CifarMobileNetV2",
    "MOBILENETV2_CFG",
    "MODELS",
    "build_model",
    "model_names",
    "is_model_spec",
    "check_model_name",
    "has_forward_span",
    "model_input_shape",
    "adapt_input_channels",
    "main_output",
    "DEFAULT_INPUT_SHAPE",
]


# --------------------------------------------------------------------------- ResNet


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample spatially by ``stride`` and zero-pad the channels.

    The padding is split evenly between the front and the back of the channel axis
    (``16 -> 32`` adds 8 zero channels on each side). Has no parameters.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        if out_planes < in_planes:
            raise ValueError(f"PadShortcut cannot shrink channels ({in_planes} -> {out_planes})")
        self.in_planes = in_planes
        self.out_planes = out_planes
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        pad = self.out_planes - self.in_planes
        if pad:
            front = pad // 2
            x = F.pad(x, (0, 0, 0, 0, front, pad - front))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_planes}, {self.out_planes}, stride={self.stride}"


class BasicBlock(nn.Module):
    """3x3 conv - BN - ReLU - 3x3 conv - BN, plus shortcut, then ReLU.

    ``hidden`` is ``conv1``'s output width (the only width pruning changes); it defaults
    to ``planes``.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, hidden: int | None = None) -> None:
        super().__init__()
        hidden = planes if hidden is None else hidden
        self.conv1 = nn.Conv2d(in_planes, hidden, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = PadShortcut(in_planes, planes, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR ResNet of depth 6n+2: stem, three stages of ``n`` BasicBlocks (16/32/64), pool, linear.

    Blocks are named ``layer{1,2,3}.{i}``. ``base`` scales the stage widths (8 gives 8/16/32:
    the same depth at a quarter of the MACs, for CPU runs). Any image size: the pool is global.
    """

    def __init__(
        self, n: int, num_classes: int = 10, widths: Mapping[str, int] | None = None, base: int = 16,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        widths = dict(widths or {})
        self.conv1 = nn.Conv2d(in_channels, base, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        in_planes = base
        for stage, (planes, stride) in enumerate(((base, 1), (2 * base, 2), (4 * base, 2)), start=1):
            blocks = []
            for i in range(n):
                name = f"layer{stage}.{i}"
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1, widths.pop(name, None)))
                in_planes = planes
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.linear = nn.Linear(4 * base, num_classes)
        _check_no_unknown_widths(widths, self)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)

    # forward helpers (incremental evaluation, icepick.evaluate.Evaluator): the same operations as
    # forward, in the same order, split at the input of a block

    def span_blocks(self) -> list[tuple[str, nn.Module]]:
        """The blocks in forward order, named as in ``named_modules()`` (``layer{1,2,3}.{i}``)."""
        return [(f"layer{s}.{i}", block) for s in (1, 2, 3) for i, block in enumerate(getattr(self, f"layer{s}"))]

    def forward_span(self, x: torch.Tensor, start: str | None = None, stop: str | None = None) -> torch.Tensor:
        """Part of :meth:`forward`: from the input of block ``start`` (None: the image, through the
        stem conv1/bn1/relu) to the input of block ``stop`` (None: through pool and linear, the logits).

        ``forward_span(forward_span(x, None, b), b, None)`` is ``forward(x)`` bit for bit: the same
        operations on the same tensors.
        """
        return _forward_span(self, x, start, stop, self._stem, self._head)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn1(self.conv1(x)))

    def _head(self, out: torch.Tensor) -> torch.Tensor:
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


# --------------------------------------------------------------------- MobileNetV2

#: (expansion t, output channels c, blocks n, first stride s), CIFAR variant.
MOBILENETV2_CFG: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class InvertedResidual(nn.Module):
    """Expansion 1x1 (``conv1``/``bn1``), depthwise 3x3 (``conv2``/``bn2``), projection 1x1 (``conv3``/``bn3``).

    Every block has the expansion conv (also for t=1). Stride-1 blocks add a shortcut:
    identity when the channel count is kept, 1x1 conv + BN when it changes.
    """

    def __init__(self, in_planes: int, out_planes: int, hidden: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(in_planes, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.conv3 = nn.Conv2d(hidden, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut: nn.Module | None
        if stride == 1 and in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, bias=False), nn.BatchNorm2d(out_planes)
            )
        elif stride == 1:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return out


def _scaled(channels: int, width_mult: float, divisor: int = 8) -> int:
    """Scale a channel count and round to the nearest multiple of ``divisor`` (>= divisor, >= 90%)."""
    if width_mult == 1.0:
        return channels
    value = channels * width_mult
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class CifarMobileNetV2(nn.Module):
    """CIFAR MobileNetV2 (17 inverted-residual blocks named ``layers.{i}``), optional width multiplier.

    Any image size: the final pool is global (at 32x32 the CIFAR model's 4x4 average pool)."""

    def __init__(
        self, num_classes: int = 10, width_mult: float = 1.0, widths: Mapping[str, int] | None = None,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        widths = dict(widths or {})
        stem = _scaled(32, width_mult)
        self.conv1 = nn.Conv2d(in_channels, stem, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        blocks = []
        in_planes = stem
        for t, c, n, s in MOBILENETV2_CFG:
            out_planes = _scaled(c, width_mult)
            for i in range(n):
                name = f"layers.{len(blocks)}"
                hidden = widths.pop(name, t * in_planes)
                blocks.append(InvertedResidual(in_planes, out_planes, hidden, s if i == 0 else 1))
                in_planes = out_planes
        self.layers = nn.Sequential(*blocks)
        last = _scaled(1280, width_mult)
        self.conv2 = nn.Conv2d(in_planes, last, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(last)
        self.linear = nn.Linear(last, num_classes)
        _check_no_unknown_widths(widths, self)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.relu(self.bn2(self.conv2(out)))
        out = F.avg_pool2d(out, out.shape[-2:]).flatten(1)  # global: 4x4 at 32x32, as the CIFAR model's pool of 4
        return self.linear(out)

    # forward helpers (incremental evaluation): the same operations as forward, split at a block

    def span_blocks(self) -> list[tuple[str, nn.Module]]:
        """The blocks in forward order, named as in ``named_modules()`` (``layers.{i}``)."""
        return [(f"layers.{i}", block) for i, block in enumerate(self.layers)]

    def forward_span(self, x: torch.Tensor, start: str | None = None, stop: str | None = None) -> torch.Tensor:
        """Part of :meth:`forward`: from the input of block ``start`` (None: the image, through the
        stem conv1/bn1/relu) to the input of block ``stop`` (None: through conv2/bn2/relu, pool and
        linear, the logits). Split and joined again it is ``forward`` bit for bit."""
        return _forward_span(self, x, start, stop, self._stem, self._head)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn1(self.conv1(x)))

    def _head(self, out: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn2(self.conv2(out)))
        out = F.avg_pool2d(out, out.shape[-2:]).flatten(1)
        return self.linear(out)


# ------------------------------------------------------------------------ helpers


def has_forward_span(model: nn.Module) -> bool:
    """Whether ``model`` can run part of its forward pass (``span_blocks`` and ``forward_span``,
    as the CIFAR ResNets and MobileNetV2 here, and their :func:`~icepick.evaluate.fold_batchnorm`
    copies); other models are evaluated with full passes only."""
    return callable(getattr(model, "forward_span", None)) and callable(getattr(model, "span_blocks", None))


def _forward_span(
    model: nn.Module,
    x: torch.Tensor,
    start: str | None,
    stop: str | None,
    stem: Callable[[torch.Tensor], torch.Tensor],
    head: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Stem (when ``start`` is None), the blocks from ``start`` up to ``stop``, head (when ``stop`` is None)."""
    blocks = model.span_blocks()
    names = [name for name, _ in blocks]

    def index(name: str | None, default: int) -> int:
        if name is None:
            return default
        if name not in names:
            raise ValueError(f"unknown block {name!r}; {type(model).__name__} has blocks {names[0]}..{names[-1]}")
        return names.index(name)

    first, last = index(start, 0), index(stop, len(blocks))
    if last < first:
        raise ValueError(f"block {stop!r} comes before block {start!r}: nothing to run from {start!r} to {stop!r}")
    out = stem(x) if start is None else x
    for _, block in blocks[first:last]:
        out = block(out)
    return head(out) if stop is None else out


def _init_weights(model: nn.Module) -> None:
    """He-normal convs, BN gamma 1 / beta 0; Linear keeps PyTorch's default."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _check_no_unknown_widths(left: Mapping[str, int], model: nn.Module) -> None:
    if left:
        raise ValueError(f"widths: unknown block name(s) {sorted(left)} for {type(model).__name__}")


def _check_widths(widths: Mapping[str, int] | None) -> dict[str, int] | None:
    if widths is None:
        return None
    out = {}
    for name, width in dict(widths).items():
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"widths: {name!r} -> {width!r} is not a positive integer width")
        out[str(name)] = int(width)
    return out


def _resnet(n: int, num_classes: int, widths: Mapping[str, int] | None, in_channels: int = 3,
            base: int = 16) -> nn.Module:
    return CifarResNet(n, num_classes, widths, base, in_channels)


def _mobilenetv2(width_mult: float, num_classes: int, widths: Mapping[str, int] | None,
                 in_channels: int = 3) -> nn.Module:
    return CifarMobileNetV2(num_classes, width_mult, widths, in_channels)


#: Registry: model name -> constructor(num_classes, widths, in_channels).
MODELS: dict[str, Callable[[int, Mapping[str, int] | None, int], nn.Module]] = {
    "resnet14": partial(_resnet, 2),
    "resnet20": partial(_resnet, 3),
    "resnet32": partial(_resnet, 5),
    "resnet56": partial(_resnet, 9),
    "resnet110": partial(_resnet, 18),
    "resnet152": partial(_resnet, 25),
    "resnet56_w050": partial(_resnet, 9, base=8),  # the paper's depths at half width (8/16/32)
    "resnet110_w050": partial(_resnet, 18, base=8),
    "resnet152_w050": partial(_resnet, 25, base=8),
    "mobilenetv2": partial(_mobilenetv2, 1.0),
    "mobilenetv2_w050": partial(_mobilenetv2, 0.5),
    "mobilenetv2_w025": partial(_mobilenetv2, 0.25),
}


def model_names() -> list[str]:
    """The registered model names, sorted."""
    return sorted(MODELS)


def check_model_name(name: str) -> None:
    """Raise ConfigError (one line, with what to do) unless ``name`` is a registry name or a well-formed spec."""
    if is_model_spec(name):
        if is_model_name(name):
            return
        raise ConfigError(f"model: {name!r} is not a spec; write torchvision:<builder> or python:<module>:<factory>")
    if name not in MODELS:
        raise ConfigError(
            f"model: {name!r} is not allowed; choose one of {', '.join(map(repr, model_names()))}, "
            "or torchvision:<builder> or python:<module>:<factory>"
        )


DEFAULT_INPUT_SHAPE = (3, 32, 32)  # CIFAR's images: the shape a model file without one was made for


def model_input_shape(model: nn.Module) -> tuple[int, int, int]:
    """``(C, H, W)`` of the images ``model`` takes (its ``input_shape``; CIFAR's 3x32x32 when unset)."""
    return tuple(getattr(model, "input_shape", None) or DEFAULT_INPUT_SHAPE)  # type: ignore[return-value]


def _check_input_shape(input_shape: object) -> tuple[int, int, int]:
    if (not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in input_shape)):
        raise ValueError(f"input_shape: {input_shape!r} must be (channels, height, width), positive integers")
    return int(input_shape[0]), int(input_shape[1]), int(input_shape[2])


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """The first convolution in registration order (a torchvision model's stem)."""
    return next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


def adapt_input_channels(model: nn.Module, channels: int) -> None:
    """Make ``model``'s first convolution take ``channels`` input channels instead of 3 (grey images
    into a torchvision model). Its weights become the sum over the 3 colour channels: a grey image
    repeated into 3 channels gives exactly the same output as the grey image through the new layer."""
    found = _first_conv(model)
    if found is None or found[1].in_channels == channels:
        return
    name, conv = found
    if conv.in_channels != 3 or channels != 1 or conv.groups != 1:
        raise ConfigError(f"model: its first convolution {name} takes {conv.in_channels} channels, the images have "
                          f"{channels}; import the data with --channels {conv.in_channels}")
    new = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation, 1,
                    conv.bias is not None, conv.padding_mode)
    with torch.no_grad():
        new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)


def _torchvision_model(name: str, builder: str, num_classes: int, channels: int) -> nn.Module:
    import torchvision

    builders = torchvision.models.list_models(module=torchvision.models)
    if builder not in builders:
        raise ConfigError(f"model: {name!r}: torchvision has no classification model {builder!r} "
                          f"(python -c 'import torchvision; print(torchvision.models.list_models())')")
    extra = {"aux_logits": False, "init_weights": True} if builder in ("googlenet", "inception_v3") else {}
    try:
        model = torchvision.models.get_model(builder, weights=None, num_classes=num_classes, **extra)
    except Exception as err:  # noqa: BLE001 - torchvision's own checks: one line naming the model
        raise ConfigError(f"model: {name!r}: torchvision cannot build it ({type(err).__name__}: "
                          f"{' '.join(str(err).split())[:160]})") from err
    adapt_input_channels(model, channels)
    return model


def _python_model(name: str, module_name: str, factory_name: str, num_classes: int, channels: int) -> nn.Module:
    import importlib
    import inspect

    try:
        factory = getattr(importlib.import_module(module_name), factory_name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"model: {name!r}: cannot import {factory_name} from {module_name} ({err}); run from the "
                          f"folder that holds {module_name.split('.')[0]}.py, or add that folder to PYTHONPATH") from err
    kwargs: dict[str, int] = {"num_classes": num_classes}
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # no signature to read (a builtin): just call it
        params = None
    if (params is not None and "num_classes" not in params
            and not any(p.kind == p.VAR_KEYWORD for p in params.values())):
        raise ConfigError(f"model: {name!r}: {factory_name}({', '.join(params)}) takes no num_classes; icepick "
                          f"calls {factory_name}(num_classes=N) with the data's class count: add that parameter")
    if params is not None and "in_channels" in params:
        kwargs["in_channels"] = channels
    try:
        model = factory(**kwargs)
    except Exception as err:  # noqa: BLE001 - the user's factory: any failure is reported in one line
        raise ConfigError(f"model: {name!r}: {factory_name}({', '.join(f'{k}={v}' for k, v in kwargs.items())}) "
                          f"failed ({type(err).__name__}: {' '.join(str(err).split())[:160]}); fix the factory, "
                          f"or give one that builds the model") from err
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model: {name!r}: {factory_name}(num_classes=...) returned {type(model).__name__}, "
                          "not an nn.Module")
    return model


def _spec_model(name: str, num_classes: int, channels: int = 3) -> nn.Module:
    """Build the model of a spec (see the module's docstring); ConfigError naming it when it cannot."""
    kind, _, rest = name.partition(":")
    if kind == "torchvision":
        return _torchvision_model(name, rest, num_classes, channels)
    module_name, factory_name = rest.split(":")
    return _python_model(name, module_name, factory_name, num_classes, channels)


def main_output(out: object) -> object:
    """A model's class scores: the output itself, or the main output of a model that also returns
    auxiliary ones in training (torchvision's GoogLeNet and Inception: ``.logits``; a tuple: its first)."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return out


def _check_classifies(model: nn.Module, name: str, num_classes: int, input_shape: tuple[int, int, int]) -> None:
    """A spec model must map one image of ``input_shape`` to ``num_classes`` outputs."""
    shape_text = "x".join(map(str, input_shape))
    model.eval()
    try:
        with torch.no_grad():
            out = main_output(model(torch.zeros(1, *input_shape)))
    except Exception as err:  # the user's model: any failure is reported in one line
        raise ConfigError(f"model: {name!r} cannot classify a {shape_text} image ({type(err).__name__}: "
                          f"{' '.join(str(err).split())[:160]}); the data's images are {shape_text}: import them at "
                          f"the size and channels the model takes (data import --size, --channels), or give a "
                          f"model for these images") from err
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"model: {name!r} gives {shape} for one {shape_text} image, not (1, {num_classes}) class "
                          f"scores")
    model.train()


def build_model(
    name: str,
    num_classes: int = 10,
    widths: Mapping[str, int] | None = None,
    input_shape: tuple[int, int, int] = DEFAULT_INPUT_SHAPE,
) -> nn.Module:
    """Build a registered model or a spec's for images of ``input_shape`` ``(C, H, W)``;
    ``widths`` (block name -> hidden width) rebuilds a pruned one.

    The model carries ``arch_name``, ``num_classes`` and ``input_shape`` attributes.
    """
    check_model_name(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes: {num_classes!r} must be a positive integer")
    input_shape = _check_input_shape(input_shape)
    if is_model_spec(name):
        model = _spec_model(name, num_classes, input_shape[0])
        _check_classifies(model, name, num_classes, input_shape)
        model.input_shape = input_shape
        widths = _check_widths(widths)
        if widths:
            from icepick.pruning import shrink_to_widths

            shrink_to_widths(model, widths)
    else:
        model = MODELS[name](num_classes, _check_widths(widths), input_shape[0])
        model.input_shape = input_shape
    model.arch_name = name
    model.num_classes = num_classes
    return model
