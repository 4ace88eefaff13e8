"""Run records (summary.json, steps.csv, pretrain.json, weight_shift.csv) -> tidy tables."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from icepick.grid import DEFAULT_CRITERION
from icepick.records import atomic_path, write_csv
from icepick.reporting.paper import RUN_COLUMNS, RUN_KEYS, experiment_name

__all__ = ["flatten_summary", "aggregate_runs", "merge_aggregates", "aggregate_pretrain",
           "aggregate_weight_shift", "write_text", "write_table"]

# ---------------------------------------------------------------- aggregation


def flatten_summary(summary: Mapping[str, Any]) -> dict[str, Any]:
    """One runs.csv row from a summary.json: its top-level scalars, the device and git commit
    of its provenance, and the experiment name."""
    row = {k: v for k, v in summary.items() if not isinstance(v, (dict, list))}
    prov = summary.get("provenance") or {}
    row["device"] = prov.get("device")
    row["git_commit"] = prov.get("git_commit")
    row.setdefault("criterion", DEFAULT_CRITERION)  # records from before the criteria were all the paper's
    missing = [k for k in RUN_KEYS if k not in row]
    if missing:
        raise ValueError(f"summary lacks {', '.join(missing)}; it is not a run summary")
    row["experiment"] = experiment_name(row["method"], row["lr_policy"], row["ratio"], row["eta"], row["theta"],
                                        row["criterion"])
    return row


def _order_columns(frame: pd.DataFrame, first: Sequence[str]) -> pd.DataFrame:
    cols = [c for c in first if c in frame.columns]
    return frame[cols + [c for c in frame.columns if c not in cols]]


def aggregate_runs(
    summary_paths: Sequence[str | Path],
    steps_paths: Sequence[str | Path],
    group: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read runs into (runs, steps): one row per run; every step row with its run's keys.

    Args:
        summary_paths: every run's summary.json.
        steps_paths: the matching steps.csv files, in the same order (same folders).
        group: experiment group name written into the ``group`` column.

    Returns:
        (runs, steps) frames in the schemas of docs/architecture.md.
    """
    if len(summary_paths) != len(steps_paths):
        raise ValueError(f"{len(summary_paths)} summaries but {len(steps_paths)} steps files; give one of each per run")
    rows, step_frames = [], []
    for s_path, t_path in zip(summary_paths, steps_paths):
        if Path(s_path).parent != Path(t_path).parent:
            raise ValueError(f"{s_path} and {t_path} are not of the same run; give them in the same order")
        try:
            summary = json.loads(Path(s_path).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{s_path}: not valid JSON ({err}); rerun that run") from err
        row = flatten_summary(summary)
        row["group"] = group
        rows.append(row)
        steps = pd.read_csv(t_path)
        keys = {k: row[k] for k in ("group", "experiment", *RUN_KEYS)}
        steps = steps.assign(**keys)
        step_frames.append(_order_columns(steps, list(keys)))
    runs = pd.DataFrame(rows, columns=RUN_COLUMNS) if not rows else _order_columns(pd.DataFrame(rows), RUN_COLUMNS)
    steps = pd.concat(step_frames, ignore_index=True) if step_frames else pd.DataFrame(columns=["group", "experiment", *RUN_KEYS, "step"])
    return runs, steps


def merge_aggregates(
    runs_frames: Sequence[pd.DataFrame], steps_frames: Sequence[pd.DataFrame]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Merge per-group aggregates into one: a run shared by groups appears once, its ``group``
    listing them all ('fig3;thresholds')."""
    identity = ["model", "experiment", "seed"]
    runs = pd.concat([f for f in runs_frames if len(f)], ignore_index=True) if any(len(f) for f in runs_frames) else runs_frames[0]
    if len(runs):
        groups = (
            runs.groupby(identity, sort=False)["group"]
            .agg(lambda g: ";".join(sorted({str(x) for x in g if pd.notna(x)})))
            .rename("group")
            .reset_index()
        )
        runs = runs.drop(columns="group").drop_duplicates(identity).merge(groups, on=identity, how="left")
        runs = _order_columns(runs, RUN_COLUMNS)
    steps = pd.concat([f for f in steps_frames if len(f)], ignore_index=True) if any(len(f) for f in steps_frames) else steps_frames[0]
    if len(steps):
        steps = steps.drop(columns="group").drop_duplicates([*identity, "step"])
        steps = steps.merge(runs[[*identity, "group"]], on=identity, how="left")
        steps = _order_columns(steps, ["group", "experiment", *RUN_KEYS])
    return runs.reset_index(drop=True), steps.reset_index(drop=True)


def aggregate_pretrain(paths: Sequence[str | Path]) -> pd.DataFrame:
    """One row per pretrain.json: model, epochs, final_test_acc, seconds, device, git_commit."""
    rows = []
    for path in paths:
        summary = json.loads(Path(path).read_text())
        row = {k: v for k, v in summary.items() if not isinstance(v, (dict, list))}
        prov = summary.get("provenance") or {}
        row["device"] = prov.get("device")
        row["git_commit"] = prov.get("git_commit")
        rows.append(row)
    return _order_columns(pd.DataFrame(rows), ["model", "epochs", "final_test_acc", "seconds", "device", "git_commit"])


def aggregate_weight_shift(paths: Sequence[str | Path]) -> pd.DataFrame:
    """All weight_shift.csv tables in one (they carry their model)."""
    frames = [pd.read_csv(p) for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["model", "step", "layer", "layer_index", "shift"])



def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_table(path: str | Path, frame: pd.DataFrame) -> None:
    """Write a CSV table atomically (no index)."""
    write_csv(path, frame)
