"""The paper's numbers (Table 1, the time savings), the tolerances of claims.md, and how
models and experiments are named in paths, tables and figures."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from icepick.grid import PAPER_MODELS, experiment_name, num

__all__ = [
    "RUN_KEYS", "RUN_COLUMNS", "PAPER_MODELS", "PAPER_RUNS", "PAPER_TABLE1", "PAPER_TIME_SAVED",
    "PAPER_HEADLINE_SAVED", "RECIPE_PRETRAINED_ACC", "TOL_SAVED_POINTS", "TOL_ACC_POINTS", "TOL_FT_RELATIVE",
    "TOL_FEWER_FT", "TOL_MAINTAIN_POINTS", "TOL_TIME_RELATIVE", "TOL_COMPARABLE_POINTS", "TOL_EARLY_RHO", "TOL_ORDER_RHO",
    "display_name", "paper_model", "label", "num",
    "experiment_name", "order_models",
]

# ---------------------------------------------------------------- the paper's numbers

#: The identity of one run: its model, configuration (with the pruning criterion) and seed.
RUN_KEYS = ["model", "method", "lr_policy", "ratio", "eta", "theta", "criterion", "seed"]

#: Columns of runs.csv, in order (architecture.md); other scalars of summary.json follow them.
RUN_COLUMNS = [
    "group", "experiment", *RUN_KEYS, "decision_split", "acc_orig", "final_acc", "n_steps",
    "n_finetunes", "total_seconds", "trace_seconds", "total_seconds_with_trace", "total_train_macs",
    "trace_train_macs", "final_params", "final_alpha", "final_macs", "device", "git_commit",
]

PAPER_RUNS = 10  # evaluations per experiment in the paper

#: Table 1: (model, eta, lr_policy) -> (mean final accuracy %, total #Ft over the 10 runs).
#: r = 0.6 (ResNets), 0.4 (MobileNetV2); theta = 2.5.
PAPER_TABLE1: dict[tuple[str, float, str], tuple[float, int]] = {
    ("resnet110", 0.3, "fixed"): (90.38, 132),
    ("resnet110", 0.3, "icepick"): (90.67, 102),
    ("resnet110", 0.7, "fixed"): (90.22, 133),
    ("resnet110", 0.7, "icepick"): (90.55, 116),
    ("resnet152", 0.3, "fixed"): (90.35, 196),
    ("resnet152", 0.3, "icepick"): (91.35, 124),
    ("resnet152", 0.7, "fixed"): (90.34, 131),
    ("resnet152", 0.7, "icepick"): (90.61, 112),
    ("mobilenetv2", 0.3, "fixed"): (89.56, 21),
    ("mobilenetv2", 0.3, "icepick"): (89.26, 20),
    ("mobilenetv2", 0.7, "fixed"): (90.10, 27),
    ("mobilenetv2", 0.7, "icepick"): (89.74, 24),
}

#: Section 4.2: time saved vs the baseline, "up to" (the best eta), percent; theta = 1.5.
PAPER_TIME_SAVED: dict[tuple[str, float], float] = {
    ("resnet110", 0.4): 83.9,
    ("resnet152", 0.4): 87.6,
    ("mobilenetv2", 0.4): 74.0,
    ("resnet110", 0.6): 71.4,
    ("resnet152", 0.6): 76.9,
    ("mobilenetv2", 0.6): 32.0,
}
PAPER_HEADLINE_SAVED = 87.6  # abstract: "save up to 87.6% of the pruning time"

#: Context, not the paper's claims: test accuracy of the published pretraining recipes
#: (docs/method.md): ResNet-110 93.5-93.7 %, MobileNetV2 94.4 %.
RECIPE_PRETRAINED_ACC: dict[str, tuple[float, float]] = {
    "resnet110": (93.5, 93.7),
    "mobilenetv2": (94.4, 94.4),
}

# Tolerances of claims.md (stated in the file).
TOL_SAVED_POINTS = 10.0  # time saved: within 10 percentage points of the paper's value
TOL_ACC_POINTS = 1.0  # a reported accuracy: within 1 point
TOL_FT_RELATIVE = 0.30  # #Ft per run: within 30 % of the paper's
TOL_FEWER_FT = 0.10  # "significantly fewer": at least 10 % fewer fine-tunings
TOL_MAINTAIN_POINTS = 2.0  # "maintaining accuracy": at most 2 points below the comparison
TOL_TIME_RELATIVE = 0.05  # "gives lower time": non-increasing, up to 5 % noise per step
TOL_COMPARABLE_POINTS = 1.5  # Table 1 "comparable performance" of the two lr policies
TOL_EARLY_RHO = 0.3  # "earlier layers shift less": Spearman(layer index, shift) >= 0.3
TOL_ORDER_RHO = 0.7  # "ordering maintained": mean Spearman(step 1, step s) >= 0.7


# ---------------------------------------------------------------- names


def _width(digits: str) -> str:
    """'025' -> '0.25', '05' -> '0.5', '1' -> '1' (width multipliers in model names)."""
    value = float("0." + digits[1:]) if digits.startswith("0") else float(digits)
    return f"{value:g}"


def display_name(model: str) -> str:
    """How a model is named in tables and figures: resnet110 -> ResNet-110, resnet110_w050 ->
    ResNet-110 (0.5x), mobilenetv2 -> MobileNetV2, mobilenetv2_w025 -> MobileNetV2 (0.25x);
    others unchanged."""
    m = re.fullmatch(r"resnet(\d+)(?:_w(\d+))?", model)
    if m:
        return f"ResNet-{m.group(1)}" + (f" ({_width(m.group(2))}x)" if m.group(2) else "")
    m = re.fullmatch(r"mobilenetv2(?:_w(\d+))?", model)
    if m:
        return "MobileNetV2" if not m.group(1) else f"MobileNetV2 ({_width(m.group(1))}x)"
    return model


def paper_model(model: str, roles: Mapping[str, str] | None = None) -> str | None:
    """The paper's model whose numbers ours is compared with, or None.

    ``roles`` maps our model names to the paper's (the small configuration's resnet20 ->
    resnet110); the paper's own models stand for themselves.
    """
    roles = roles or {}
    if model in roles:
        return roles[model]
    return model if model in PAPER_MODELS else None


def label(model: str, roles: Mapping[str, str] | None) -> str:
    """Display name, with the paper's model it stands for when that is another one."""
    role = paper_model(model, roles)
    name = display_name(model)
    return name if role in (None, model) else f"{name} (as {display_name(role)})"


def order_models(models_present: Iterable[str], order: Sequence[str] | None) -> list[str]:
    present = list(dict.fromkeys(models_present))
    if not order:
        return present
    return [m for m in order if m in present] + [m for m in present if m not in order]


