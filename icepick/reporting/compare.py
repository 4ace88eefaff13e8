"""ICE-Pick against the iterative baseline on one model and data set: the answer to "how much
does ICE-Pick save on my model?" (``icepick compare``, :func:`icepick.compare`).

Pure functions of the two runs' records (``summary.json`` and ``steps.csv``), so the table, the
savings and the figure follow from what the runs wrote, never from a second measurement:

- :func:`comparison_table`: one row per method (ICE-Pick, the baseline) with the unpruned and
  final accuracy, the fine-tunings, the training MACs and the wall time, each also with the
  freeze trace (ICE-Pick pays for it when eta > 0; the baseline makes none);
- :func:`comparison_savings`: what ICE-Pick saves against the baseline, in percent of the
  baseline's training MACs and time, and the accuracy difference in points;
- :func:`comparison_curves`: accuracy along the pruning steps against cumulative training
  MACs, what :func:`icepick.reporting.figures.plot_comparison` draws;
- :func:`format_comparison`: the printed answer; :func:`write_comparison`: the files
  (``comparison.csv``, ``comparison.json``, ``comparison.png`` and ``.pdf``).

Units: accuracies in percent (0-100), their difference in points, times in seconds, MACs
counted (multiply-accumulates), savings in percent of the baseline's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from icepick.records import write_csv, write_json

__all__ = [
    "METHODS",
    "METHOD_LABELS",
    "TUNED",
    "TUNED_COLUMNS",
    "COMPARISON_COLUMNS",
    "COMPARISON_FILES",
    "comparison_table",
    "comparison_savings",
    "comparison_curves",
    "format_comparison",
    "write_comparison",
]

#: The two runs of a comparison, in the order of its table.
METHODS = ("icepick", "baseline")
METHOD_LABELS = {"icepick": "ICE-Pick", "baseline": "baseline", "tuned": "ICE-Pick tuned"}
#: The optional third run (``icepick compare --tuned best.json``): ICE-Pick with a tuned setting.
TUNED = "tuned"
#: Columns the table gains when it has the tuned row: the search's cost and the totals with it
#: (0 and the with-trace totals for the two other runs, which made no search).
TUNED_COLUMNS = ["search_train_macs", "search_seconds", "total_train_macs_with_search", "total_seconds_with_search"]

#: The columns of ``comparison.csv`` (one row per method): the run's settings, then the answer.
COMPARISON_COLUMNS = [
    "method", "model", "lr_policy", "ratio", "theta", "eta", "criterion", "seed",
    "acc_orig", "final_acc", "n_steps", "n_finetunes",
    "total_train_macs", "trace_train_macs", "total_train_macs_with_trace",
    "total_seconds", "trace_seconds", "total_seconds_with_trace",
    "final_alpha", "final_macs",
]

#: The files a finished comparison writes at the top of its folder (one holding any of them is a comparison).
COMPARISON_FILES = ("comparison.csv", "comparison.json", "comparison.png", "comparison.pdf")


def comparison_table(summaries: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per method of ``summaries`` (``{"icepick": summary, "baseline": summary}``, each a
    run's ``summary.json``), the columns of :data:`COMPARISON_COLUMNS`, copied from the summaries."""
    missing = [m for m in METHODS if m not in summaries]
    if missing:
        raise ValueError(f"summaries: no run of {', '.join(missing)}; a comparison needs both {' and '.join(METHODS)}")
    rows = []
    for method in METHODS:
        summary = summaries[method]
        rows.append({"method": method, **{col: summary.get(col) for col in COMPARISON_COLUMNS if col != "method"}})
    if TUNED not in summaries:
        return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    for row in rows:  # no search: the totals with the search are those with the trace
        row.update(search_train_macs=0.0, search_seconds=0.0,
                   total_train_macs_with_search=row["total_train_macs_with_trace"],
                   total_seconds_with_search=row["total_seconds_with_trace"])
    tuned = summaries[TUNED]
    rows.append({"method": TUNED, **{col: tuned.get(col) for col in COMPARISON_COLUMNS + TUNED_COLUMNS
                                     if col != "method"}})
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS + TUNED_COLUMNS)


def _saved(part: float, whole: float) -> float:
    """Percent of ``whole`` that ``part`` saves (NaN when there is nothing to save from)."""
    return 100.0 * (1.0 - float(part) / float(whole)) if whole else math.nan


def comparison_savings(table: pd.DataFrame) -> dict[str, float]:
    """What ICE-Pick saves against the baseline, from :func:`comparison_table`'s rows.

    ``saved_macs`` = 1 - ICE-Pick's training MACs / the baseline's, in percent; ``_with_trace``
    counts ICE-Pick's freeze trace on its side (the baseline makes none); ``saved_wall`` and
    ``saved_wall_with_trace`` the same with wall-clock seconds. ``acc_diff``: ICE-Pick's final
    accuracy minus the baseline's, in points (negative: ICE-Pick ends lower).
    ``finetunes_saved``: fine-tunings the baseline ran and ICE-Pick skipped.
    """
    ice, base = (table.set_index("method").loc[m] for m in METHODS)
    out = {
        "saved_macs": _saved(ice["total_train_macs"], base["total_train_macs"]),
        "saved_macs_with_trace": _saved(ice["total_train_macs_with_trace"], base["total_train_macs"]),
        "saved_wall": _saved(ice["total_seconds"], base["total_seconds"]),
        "saved_wall_with_trace": _saved(ice["total_seconds_with_trace"], base["total_seconds"]),
        "acc_diff": float(ice["final_acc"]) - float(base["final_acc"]),
        "finetunes_saved": int(base["n_finetunes"]) - int(ice["n_finetunes"]),
    }
    if TUNED in set(table["method"]):  # the tuned run, its search's cost included, against the baseline
        tuned = table.set_index("method").loc[TUNED]
        out.update({
            "tuned_saved_macs": _saved(tuned["total_train_macs_with_trace"], base["total_train_macs"]),
            "tuned_saved_macs_with_search": _saved(tuned["total_train_macs_with_search"], base["total_train_macs"]),
            "tuned_saved_wall": _saved(tuned["total_seconds_with_trace"], base["total_seconds"]),
            "tuned_saved_wall_with_search": _saved(tuned["total_seconds_with_search"], base["total_seconds"]),
            "tuned_acc_diff": float(tuned["final_acc"]) - float(base["final_acc"]),
        })
    return out


def comparison_curves(steps: Mapping[str, pd.DataFrame], table: pd.DataFrame) -> pd.DataFrame:
    """Accuracy along the pruning steps against cumulative training MACs, per method.

    Columns: method, step (0 = the unpruned model), acc, finetuned, train_macs (cumulative,
    the freeze trace's included: ICE-Pick's line starts at the trace's MACs, the work it
    pays before its first step). ``steps``: each method's ``steps.csv`` as a frame.
    """
    rows = []
    for method in METHODS:
        run = table.set_index("method").loc[method]
        start = float(run["trace_train_macs"] or 0)
        rows.append({"method": method, "step": 0, "acc": float(run["acc_orig"]), "finetuned": False,
                     "train_macs": start})
        for rec in steps[method].to_dict("records"):
            rows.append({"method": method, "step": int(rec["step"]), "acc": float(rec["acc"]),
                         "finetuned": bool(rec["finetuned"]),
                         "train_macs": start + float(rec["train_macs_cumulative"])})
    return pd.DataFrame(rows, columns=["method", "step", "acc", "finetuned", "train_macs"])


def _macs(value: float) -> str:
    """MACs with a unit that keeps them readable (GMAC up to PMAC)."""
    if not value:
        return "0"
    for unit, scale in (("PMAC", 1e15), ("TMAC", 1e12), ("GMAC", 1e9)):
        if value >= scale:
            return f"{value / scale:,.2f} {unit}"
    return f"{value / 1e9:,.3f} GMAC"


def _pct(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.1f}%"


def format_comparison(table: pd.DataFrame, savings: Mapping[str, float]) -> str:
    """The printed answer: a table of both runs and the unpruned model, and one line of savings."""
    first = table.iloc[0]
    uses_trace = bool(table["trace_train_macs"].fillna(0).gt(0).any() or table["trace_seconds"].fillna(0).gt(0).any())
    header = (f"ICE-Pick against the iterative baseline: {first['model']}, r = {first['ratio']:g}, "
              f"θ = {first['theta']:g}, η = {first['eta']:g}, criterion {first['criterion']}, "
              f"{int(first['n_steps'])} pruning steps")
    columns = ["", "accuracy (%)", "fine-tunings", "training MACs", "+ trace", "time (s)", "+ trace"]
    lines = [["unpruned", f"{float(first['acc_orig']):.2f}", "", "", "", "", ""]]
    for _, row in table.iterrows():
        lines.append([
            METHOD_LABELS[row["method"]], f"{float(row['final_acc']):.2f}",
            f"{int(row['n_finetunes'])} of {int(row['n_steps'])}", _macs(float(row["total_train_macs"])),
            _macs(float(row["total_train_macs_with_trace"])), f"{float(row['total_seconds']):.1f}",
            f"{float(row['total_seconds_with_trace']):.1f}",
        ])
    widths = [max(len(r[i]) for r in [columns, *lines]) for i in range(len(columns))]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    saved = (f"ICE-Pick saves {_pct(savings['saved_macs'])} of the baseline's training MACs and "
             f"{_pct(savings['saved_wall'])} of its time")
    if uses_trace:
        saved += (f" ({_pct(savings['saved_macs_with_trace'])} and {_pct(savings['saved_wall_with_trace'])} "
                  "with the freeze trace)")
    saved += f"; accuracy {savings['acc_diff']:+.2f} points against the baseline."
    notes = [saved]
    if TUNED in set(table["method"]):
        t = table.set_index("method").loc[TUNED]
        notes.append(
            f"ICE-Pick tuned (θ = {float(t['theta']):g}, η = {float(t['eta']):g}): with its search "
            f"({_macs(float(t['search_train_macs']))}, {float(t['search_seconds']):.1f} s) "
            f"{_macs(float(t['total_train_macs_with_search']))} and {float(t['total_seconds_with_search']):.1f} s; it saves "
            f"{_pct(savings['tuned_saved_macs_with_search'])} of the baseline's training MACs and "
            f"{_pct(savings['tuned_saved_wall_with_search'])} of its time with the search "
            f"({_pct(savings['tuned_saved_macs'])} and {_pct(savings['tuned_saved_wall'])} without); accuracy "
            f"{savings['tuned_acc_diff']:+.2f} points against the baseline.")
    return "\n".join([header, "", fmt(columns), *(fmt(r) for r in lines), "", *notes]) + "\n"


def write_comparison(
    out_dir: str | Path,
    table: pd.DataFrame,
    savings: Mapping[str, float],
    steps: Mapping[str, pd.DataFrame],
    meta: Mapping[str, Any],
) -> Path:
    """Write ``comparison.csv`` (the table), ``comparison.json`` (the table, the savings and
    ``meta``: settings, data set identity, provenance, the runs' records) and the figure
    (``comparison.png`` and ``comparison.pdf``) into ``out_dir``, each atomically; the JSON last,
    so a folder holding it holds the whole comparison. Returns the PNG's path."""
    from icepick.reporting.figures import plot_comparison

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "comparison.csv", table)
    png = out / "comparison.png"
    plot_comparison(comparison_curves(steps, table), out / "comparison.pdf", png, table)
    record = {
        "table": table.to_dict("records"),
        "savings": dict(savings),
        **meta,
        "files": {"table": "comparison.csv", "figure": ["comparison.png", "comparison.pdf"],
                  **{m: {"steps": f"{m}/steps.csv", "summary": f"{m}/summary.json", "model": f"{m}/pruned.pt"}
                     for m in METHODS}},
    }
    write_json(out / "comparison.json", record)
    return png
