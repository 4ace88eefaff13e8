"""A user's own small CNN, for the tests of models outside the paper's families
(``python:custom_cnn:tiny_net``): a stem, one residual block, two plain convolutions, a classifier.

Its pruning groups are known: the stem and the block's second convolution feed the residual
addition (coupled); ``block_a`` and ``plain1`` feed nothing but the next convolution (the
steps); ``plain2`` feeds the classifier.

The others each show one structure: a grouped convolution (``grouped_net``), a convolutional
classifier without BatchNorm (``all_conv_net``), channels Torch-Pruning cannot follow
(``scaled_net``), factories icepick cannot call (``no_num_classes``, ``failing_net``), and
models without a group to prune or for grey images only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(8)
        self.block_a = nn.Conv2d(8, 12, 3, padding=1, bias=False)
        self.block_a_bn = nn.BatchNorm2d(12)
        self.block_b = nn.Conv2d(12, 8, 3, padding=1, bias=False)
        self.block_b_bn = nn.BatchNorm2d(8)
        self.plain1 = nn.Conv2d(8, 10, 3, stride=2, padding=1, bias=False)
        self.plain1_bn = nn.BatchNorm2d(10)
        self.plain2 = nn.Conv2d(10, 16, 3, stride=2, padding=1, bias=False)
        self.plain2_bn = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem_bn(self.stem(x)))
        y = F.relu(self.block_a_bn(self.block_a(x)))
        x = F.relu(x + self.block_b_bn(self.block_b(y)))
        x = F.relu(self.plain1_bn(self.plain1(x)))
        x = F.relu(self.plain2_bn(self.plain2(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def tiny_net(num_classes: int = 10) -> nn.Module:
    return TinyNet(num_classes)


class GreyNet(nn.Module):
    """Takes one-channel images only: it cannot be traced on a 3x32x32 image."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.conv(x), 1).flatten(1))


def grey_net(num_classes: int = 10) -> nn.Module:
    return GreyNet(num_classes)


def head_only(num_classes: int = 10) -> nn.Module:
    """One convolution straight into the classifier: no group to prune."""
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))


class AnyNet(nn.Module):
    """TinyNet for images of any channel count (``in_channels``), as a user's factory may take it."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.net = TinyNet(num_classes)
        self.net.stem = nn.Conv2d(in_channels, 8, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def tiny_net_any(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return AnyNet(num_classes, in_channels)


class GroupedNet(nn.Module):
    """A 1x1 convolution into a grouped 3x3 one (``groups=4``, as RegNet and ResNeXt), then a 1x1
    and the classifier: ``reduce`` feeds the grouped ``grouped`` and ``grouped`` is one, so both
    are pruned in multiples of 4; ``narrow`` feeds a grouped convolution with one channel per
    group (``spread``, 4 -> 8 channels in 4 groups), which cannot shrink: it is no step."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(8)
        self.reduce = nn.Conv2d(8, 16, 1, bias=False)
        self.reduce_bn = nn.BatchNorm2d(16)
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4, bias=False)
        self.grouped_bn = nn.BatchNorm2d(16)
        self.narrow = nn.Conv2d(16, 4, 1, bias=False)
        self.narrow_bn = nn.BatchNorm2d(4)
        self.spread = nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=4, bias=False)
        self.spread_bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem_bn(self.stem(x)))
        x = F.relu(self.reduce_bn(self.reduce(x)))
        x = F.relu(self.grouped_bn(self.grouped(x)))
        x = F.relu(self.narrow_bn(self.narrow(x)))
        x = F.relu(self.spread_bn(self.spread(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def grouped_net(num_classes: int = 10) -> nn.Module:
    return GroupedNet(num_classes)


class AllConvNet(nn.Module):
    """All-convolutional, without BatchNorm (as SqueezeNet): its classifier is a 1x1 convolution to
    ``num_classes`` channels, averaged over the image; that convolution's group is the model's
    output and is never pruned (steps: ``conv1``, ``conv2``)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.classifier = nn.Conv2d(16, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        return F.adaptive_avg_pool2d(F.relu(self.classifier(x)), 1).flatten(1)


def all_conv_net(num_classes: int = 10) -> nn.Module:
    return AllConvNet(num_classes)


def no_num_classes() -> nn.Module:
    """A factory that takes no ``num_classes``: icepick cannot give it the data's class count."""
    return TinyNet(10)


def failing_net(num_classes: int = 10) -> nn.Module:
    """A factory that raises."""
    raise RuntimeError(f"cannot make a net for {num_classes} classes")


class ScaledNet(nn.Module):
    """Multiplies ``conv1``'s channels by a fixed per-channel buffer, which Torch-Pruning does not see:
    pruning ``conv1`` leaves 5 channels against 8 scales, and the model no longer runs."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 12, 3, padding=1)
        self.register_buffer("scale", torch.linspace(0.5, 1.5, 8).view(1, 8, 1, 1))
        self.fc = nn.Linear(12, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x)) * self.scale
        x = F.relu(self.conv2(x))
        return self.fc(x.mean((2, 3)))


def scaled_net(num_classes: int = 10) -> nn.Module:
    return ScaledNet(num_classes)
