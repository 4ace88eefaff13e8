"""Test(.) of Algorithm 1: top-1 accuracy of a model on a device-resident split."""

from __future__ import annotations

import torch
from torch import nn

from icepick.data import Split, eval_batches

__all__ = ["accuracy"]


def accuracy(model: nn.Module, split: Split, batch_size: int = 1000) -> float:
    """Top-1 accuracy in percent (0-100), in eval mode under inference mode.

    The model's previous train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=split.labels.device)
    try:
        with torch.inference_mode():
            for x, y in eval_batches(split, batch_size):
                correct += (model(x).argmax(dim=1) == y).sum()
    finally:
        model.train(was_training)
    return 100.0 * correct.item() / max(len(split), 1)
