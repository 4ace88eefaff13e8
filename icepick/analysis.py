"""Section 4.1: how far each layer's weights move when a pruned model is fine-tuned.

``shift_trace`` prunes blocks in forward order and fine-tunes the whole model after each
prune, recording every conv layer's weight shift
| ||W_after||_1 - ||W_before||_1 | / ||W_orig||_2 after each step. Figure 2 is drawn from
many steps; the freeze trace of ICE-Pick is its first step alone (``freeze_trace``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from torch import nn

from icepick.config import check_int, check_positive, check_range
from icepick.evaluate import accuracy
from icepick.finetune import FinetuneConfig, finetune, step_seed
from icepick.freezing import layer_shifts, layer_trainable, training_macs_per_sample, weight_l1, weight_l2
from icepick.pruning import count_macs, layer_macs, prunable_blocks, prune_block
from icepick.records import provenance
from icepick.runtime import synchronize

__all__ = ["WeightShiftConfig", "shift_trace", "freeze_trace", "trace_record", "weight_shift_table"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightShiftConfig:
    """Section 4.1 / Figure 2: iterative pruning with a full fine-tuning after every step."""

    steps: int = 10  # pruning steps traced
    ratio: float = 0.4  # r of every block
    lr: float = 1e-3  # the fine-tuning rate (the paper: 0.001)
    seed: int = 0


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

    check_range("ratio", ratio, 0.0, 1.0, low_open=True, high_open=True)
    check_positive("lr", lr)
    blocks = [name for name, _ in prunable_blocks(model)]
    check_int("steps", steps, 1)
    if steps > len(blocks):
        raise ValueError(f"steps: {steps} is more than the {len(blocks)} prunable blocks of the model")
    ft_cfg = ft_cfg or FinetuneConfig(early_halt=0)
    teacher_macs = count_macs(teacher) if teacher is not None and ft_cfg.kd_weight else 0
    for param in model.parameters():
        param.requires_grad_(True)
    l2_orig = weight_l2(model)
    shifts: list[dict[str, float]] = []
    train_macs = 0
    for step in tqdm(range(1, steps + 1), desc="weight shift", unit="step", disable=not show_progress):
        prune_block(model, blocks[step - 1], ratio)
        before = weight_l1(model)
        result = finetune(model, teacher, train, lr, ft_cfg, step_seed(seed, step))
        train_macs += result.samples * training_macs_per_sample(layer_macs(model), layer_trainable(model), teacher_macs)
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


def trace_record(
    model: nn.Module,
    teacher: nn.Module | None,
    data: "ExperimentData",  # noqa: F821 - icepick.data.ExperimentData
    ratio: float,
    lr: float,
    ft_cfg: FinetuneConfig,
    seed: int,
    device: Any,
    config: dict[str, Any],
) -> dict[str, Any]:
    """Run the freeze trace on ``model`` (pruned and trained in place) and return its record:
    ``{model, seed, layers, seconds, train_macs, acc_before, acc_after, config, provenance}``
    (the schema of ``trace.json``, docs/architecture.md). ``config`` is merged with the trace's
    own settings."""
    acc_before = accuracy(model, data.test)
    trace = freeze_trace(model, teacher, data.train, ratio, lr, ft_cfg, seed)
    return {
        "model": model.arch_name, "seed": seed, **trace,
        "acc_before": acc_before, "acc_after": accuracy(model, data.test),
        "config": {**config, "ratio": ratio, "base_lr": lr, **vars(ft_cfg)},
        "provenance": provenance(device, ft_cfg.precision, data.info.record() if data.info else None),
    }


def weight_shift_table(model_name: str, shifts: list[dict[str, float]]) -> "pd.DataFrame":  # noqa: F821
    """Tidy table of ``shift_trace`` output: model, step, layer, layer_index, shift."""
    import pandas as pd

    rows = [
        {"model": model_name, "step": step, "layer": layer, "layer_index": index, "shift": shift}
        for step, by_layer in enumerate(shifts, start=1)
        for index, (layer, shift) in enumerate(by_layer.items())
    ]
    return pd.DataFrame(rows, columns=["model", "step", "layer", "layer_index", "shift"])
