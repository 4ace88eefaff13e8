"""Section 4.1: how far each layer's weights move when a pruned model is fine-tuned.

``shift_trace`` prunes blocks in forward order and fine-tunes the whole model after each
prune, recording every conv layer's weight shift
| ||W_after||_1 - ||W_before||_1 | / ||W_orig||_2 after each step. Figure 2 is drawn from
many steps; the freeze trace of ICE-Pick is its first step alone (``freeze_trace``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from torch import nn

from icepick.config import check_int, check_positive, check_range
from icepick.finetune import FinetuneConfig, finetune
from icepick.freezing import layer_shifts, layer_trainable, training_macs_per_sample, weight_l1, weight_l2
from icepick.pruning import layer_macs, prunable_blocks, prune_block
from icepick.runtime import synchronize

__all__ = ["shift_trace", "freeze_trace", "weight_shift_table"]

log = logging.getLogger(__name__)


def shift_trace(
    model: nn.Module,
    teacher: nn.Module | None,
    train: "Split",  # noqa: F821 - icepick.data.Split
    ratio: float,
    steps: int,
    lr: float = 1e-3,
    ft_cfg: FinetuneConfig | None = None,
    seed: int = 0,
    show_progress: bool = False,
) -> tuple[list[dict[str, float]], int]:
    """Prune ``steps`` blocks in order, fully fine-tuning after each; return the shifts per step.

    Returns:
        (shifts, train_macs): ``shifts[i]`` maps layer name -> shift after step i+1 (layer
        names in forward order), and the training MACs spent.
    """
    from tqdm import tqdm

    from icepick.algorithm import step_seed

    check_range("ratio", ratio, 0.0, 1.0, low_open=True, high_open=True)
    check_positive("lr", lr)
    blocks = [name for name, _ in prunable_blocks(model)]
    check_int("steps", steps, 1)
    if steps > len(blocks):
        raise ValueError(f"steps: {steps} is more than the {len(blocks)} prunable blocks of the model")
    ft_cfg = ft_cfg or FinetuneConfig(early_halt=0)
    for param in model.parameters():
        param.requires_grad_(True)
    l2_orig = weight_l2(model)
    shifts: list[dict[str, float]] = []
    train_macs = 0
    for step in tqdm(range(1, steps + 1), desc="weight shift", unit="step", disable=not show_progress):
        prune_block(model, blocks[step - 1], ratio)
        before = weight_l1(model)
        result = finetune(model, teacher, train, lr, ft_cfg, step_seed(seed, step))
        train_macs += result.samples * training_macs_per_sample(layer_macs(model), layer_trainable(model))
        shifts.append(layer_shifts(before, weight_l1(model), l2_orig))
        log.info("weight shift step %d/%d (%s) done", step, steps, blocks[step - 1])
    return shifts, train_macs


def freeze_trace(
    model: nn.Module,
    teacher: nn.Module | None,
    train: "Split",  # noqa: F821
    ratio: float,
    lr: float = 1e-3,
    ft_cfg: FinetuneConfig | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The freeze trace: prune the first block, fine-tune one epoch at ``lr``, score every layer.

    Returns ``{"layers": [{"layer", "index", "score"}], "seconds", "train_macs"}``; the seconds
    are the trace's own cost, reported beside the pruning time.
    """
    device = next(model.parameters()).device
    synchronize(device)
    start = time.perf_counter()
    shifts, train_macs = shift_trace(model, teacher, train, ratio, 1, lr, ft_cfg, seed)
    synchronize(device)
    seconds = time.perf_counter() - start
    layers = [{"layer": name, "index": i, "score": score} for i, (name, score) in enumerate(shifts[0].items())]
    return {"layers": layers, "seconds": seconds, "train_macs": train_macs}


def weight_shift_table(model_name: str, shifts: list[dict[str, float]]) -> "pd.DataFrame":  # noqa: F821
    """Tidy table of ``shift_trace`` output: model, step, layer, layer_index, shift."""
    import pandas as pd

    rows = [
        {"model": model_name, "step": step, "layer": layer, "layer_index": index, "shift": shift}
        for step, by_layer in enumerate(shifts, start=1)
        for index, (layer, shift) in enumerate(by_layer.items())
    ]
    return pd.DataFrame(rows, columns=["model", "step", "layer", "layer_index", "shift"])
