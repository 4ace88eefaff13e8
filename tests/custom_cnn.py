"""A user's own small CNN, for the tests of models outside the paper's families
(``python:custom_cnn:tiny_net``): a stem, one residual block, two plain convolutions, a classifier.

Its pruning groups are known: the stem and the block's second convolution feed the residual
addition (coupled); ``block_a`` and ``plain1`` feed nothing but the next convolution (the
steps); ``plain2`` feeds the classifier.
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
