"""Test(.) of Algorithm 1: top-1 accuracy of a model on a device-resident split."""

from __future__ import annotations

import torch
from torch import nn

from icepick.data import MEMORY_FORMAT, Split, default_eval_batch_size, ensure_cpu_allocator, eval_batches, to_memory_format

__all__ = ["accuracy"]


def accuracy(model: nn.Module, split: Split, batch_size: int | None = None) -> float:
    """Top-1 accuracy in percent (0-100), in eval mode under inference mode.

    The model's previous train/eval mode is restored afterwards. The model and the batches
    are put in channels_last (the fast layout, see :data:`icepick.data.MEMORY_FORMAT`).
    ``batch_size`` None (or 0) picks the device's best (:func:`icepick.data.default_eval_batch_size`:
    1000 on a GPU, 128 on a CPU); the accuracy does not depend on it.
    """
    ensure_cpu_allocator(split.device)
    batch_size = batch_size or default_eval_batch_size(split.device)
    to_memory_format(model)
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=split.labels.device)
    try:
        with torch.inference_mode():
            for x, y in eval_batches(split, batch_size, MEMORY_FORMAT):
                correct += (model(x).argmax(dim=1) == y).sum()
    finally:
        model.train(was_training)
    return 100.0 * correct.item() / max(len(split), 1)
