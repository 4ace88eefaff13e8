"""Table 1, the time savings and the threshold summary, as frames and booktabs LaTeX."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from icepick.grid import ABLATION_ARMS, DEFAULT_CRITERION, ablation_arm
from icepick.reporting.paper import (
    PAPER_RUNS, PAPER_TABLE1, PAPER_TIME_SAVED, display_name, label, num, order_models, paper_model,
)

__all__ = ["table1", "table1_latex", "time_savings", "time_savings_latex", "threshold_summary", "tex_escape",
           "lr_name", "ARM_LABELS", "with_arms", "ablation_table", "ablation_latex", "criteria_table", "criteria_latex"]

# ---------------------------------------------------------------- tables


def _icepick_runs(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["method"] == "icepick"]


def table1(runs: pd.DataFrame, roles: Mapping[str, str] | None = None, models: Sequence[str] | None = None) -> pd.DataFrame:
    """Table 1 from its runs: one row per (model, freeze eta, lr policy).

    Columns: model, label, paper_model, eta, lr_policy, ratio, theta, n_seeds, acc_mean,
    acc_std, n_ft_total, n_ft_mean, paper_acc, paper_n_ft (total over the paper's 10 runs),
    paper_n_ft_mean.
    """
    runs = _icepick_runs(runs)
    rows = []
    for model in order_models(runs["model"], models):
        sub = runs[runs["model"] == model]
        role = paper_model(model, roles)
        for eta in sorted(sub["eta"].unique()):
            for lr in [p for p in ("fixed", "icepick") if p in set(sub["lr_policy"])]:
                cell = sub[(sub["eta"] == eta) & (sub["lr_policy"] == lr)]
                if cell.empty:
                    continue
                paper = PAPER_TABLE1.get((role, round(float(eta), 3), lr)) if role else None
                rows.append({
                    "model": model,
                    "label": label(model, roles),
                    "paper_model": role,
                    "eta": float(eta),
                    "lr_policy": lr,
                    "ratio": float(cell["ratio"].iloc[0]),
                    "theta": float(cell["theta"].iloc[0]),
                    "n_seeds": int(cell["seed"].nunique()),
                    "acc_mean": float(cell["final_acc"].mean()),
                    "acc_std": float(cell["final_acc"].std(ddof=1)) if len(cell) > 1 else math.nan,
                    "n_ft_total": int(cell["n_finetunes"].sum()),
                    "n_ft_mean": float(cell["n_finetunes"].mean()),
                    "paper_acc": paper[0] if paper else math.nan,
                    "paper_n_ft": paper[1] if paper else math.nan,
                    "paper_n_ft_mean": paper[1] / PAPER_RUNS if paper else math.nan,
                })
    return pd.DataFrame(rows, columns=[
        "model", "label", "paper_model", "eta", "lr_policy", "ratio", "theta", "n_seeds", "acc_mean", "acc_std",
        "n_ft_total", "n_ft_mean", "paper_acc", "paper_n_ft", "paper_n_ft_mean",
    ])


def tex_escape(text: str) -> str:
    return text.replace("%", r"\%").replace("#", r"\#").replace("_", r"\_")


def _pm(mean: float, std: float, digits: int = 2) -> str:
    if math.isnan(mean):
        return "--"
    return f"{mean:.{digits}f} $\\pm$ {std:.{digits}f}" if not math.isnan(std) else f"{mean:.{digits}f}"


def lr_name(policy: str) -> str:
    return {"icepick": "ICE-Pick", "fixed": "fixed"}.get(policy, policy)


def _tabular(comments: list[str], columns: str, header: str, blocks: Any) -> str:
    """A booktabs LaTeX tabular: comment lines, the header row and the body rows of ``blocks``."""
    lines = [*comments, rf"\begin{{tabular}}{{{columns}}}", r"\toprule", header, r"\midrule",
             *_latex_rows(blocks), r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _latex_rows(blocks: list[list[list[str]]]) -> list[str]:
    lines = []
    for i, block in enumerate(blocks):
        if i:
            lines.append(r"\addlinespace")
        lines.extend(" & ".join(cells) + r" \\" for cells in block)
    return lines


def table1_latex(table: pd.DataFrame) -> str:
    """Table 1 as a booktabs tabular: ours beside the paper's values ('--' where it has none)."""
    header = (r"Model & Freeze & LR & Accuracy (\%) & \#Ft (seeds) & Paper acc.\ (\%) & Paper \#Ft (runs) \\")
    blocks = []
    for _, sub in table.groupby("model", sort=False):
        block = []
        for _, r in sub.iterrows():
            paper_acc = "--" if math.isnan(r["paper_acc"]) else f"{r['paper_acc']:.2f}"
            paper_ft = "--" if math.isnan(r["paper_n_ft"]) else f"{int(r['paper_n_ft'])} ({PAPER_RUNS})"
            block.append([
                tex_escape(r["label"]), f"{r['eta'] * 100:g}\\%", lr_name(r["lr_policy"]),
                _pm(r["acc_mean"], r["acc_std"]), f"{int(r['n_ft_total'])} ({int(r['n_seeds'])})",
                paper_acc, paper_ft,
            ])
        blocks.append(block)
    ratios = ", ".join(f"{display_name(m)} r={num(r)}" for m, r in table.groupby("model", sort=False)["ratio"].first().items())
    thetas = ", ".join(num(t) for t in sorted(table["theta"].unique()))
    return _tabular([
        "% Table 1: fixed vs ICE-Pick learning rate (generated by icepick.reporting; do not edit).",
        f"% Pruning ratios: {ratios}; theta = {thetas}%. Accuracy: mean +- std over seeds;",
        "% #Ft: total fine-tunings over all seeds (number of seeds). Paper: mean over 10 runs, total #Ft.",
    ], "lllrrrr", header, blocks)


def time_savings(runs: pd.DataFrame, roles: Mapping[str, str] | None = None, models: Sequence[str] | None = None) -> pd.DataFrame:
    """Time saved by ICE-Pick vs the baseline, per (model, r, eta), means over seeds, percent.

    saved_wall = 1 - mean(total_seconds) / mean(baseline total_seconds); ``_with_trace`` adds
    the freeze trace to ICE-Pick's side; saved_macs and saved_macs_with_trace do the same with
    training MACs. paper_saved is the paper's "up to" value of the (model, r), and best marks
    our eta with the largest wall-clock saving of that (model, r).
    """
    base = runs[runs["method"] == "baseline"]
    ice = runs[(runs["method"] == "icepick") & (runs["lr_policy"] == "icepick")]
    rows = []
    for model in order_models(ice["model"], models):
        role = paper_model(model, roles)
        for ratio in sorted(ice.loc[ice["model"] == model, "ratio"].unique()):
            b = base[(base["model"] == model) & (base["ratio"] == ratio)]
            if b.empty:
                continue
            b_sec, b_macs = b["total_seconds"].mean(), b["total_train_macs"].mean()
            sub = ice[(ice["model"] == model) & (ice["ratio"] == ratio)]
            for (theta, eta), cell in sub.groupby(["theta", "eta"]):
                sec = cell["total_seconds"].mean()
                sec_tr = cell["total_seconds_with_trace"].mean() if "total_seconds_with_trace" in cell else math.nan
                macs = cell["total_train_macs"].mean()
                macs_tr = macs + (cell["trace_train_macs"].fillna(0).mean() if "trace_train_macs" in cell else 0.0)
                rows.append({
                    "model": model, "label": label(model, roles), "paper_model": role,
                    "ratio": float(ratio), "theta": float(theta), "eta": float(eta),
                    "n_seeds": int(cell["seed"].nunique()), "n_baseline_seeds": int(b["seed"].nunique()),
                    "seconds": sec, "seconds_with_trace": sec_tr, "baseline_seconds": b_sec,
                    "train_macs": macs, "train_macs_with_trace": macs_tr, "baseline_train_macs": b_macs,
                    "saved_wall": 100 * (1 - sec / b_sec),
                    "saved_wall_with_trace": 100 * (1 - sec_tr / b_sec),
                    "saved_macs": 100 * (1 - macs / b_macs),
                    "saved_macs_with_trace": 100 * (1 - macs_tr / b_macs),
                    "acc": cell["final_acc"].mean(), "baseline_acc": b["final_acc"].mean(),
                    "n_ft_mean": cell["n_finetunes"].mean(),
                    "paper_saved": PAPER_TIME_SAVED.get((role, round(float(ratio), 3)), math.nan) if role else math.nan,
                })
    out = pd.DataFrame(rows, columns=[
        "model", "label", "paper_model", "ratio", "theta", "eta", "n_seeds", "n_baseline_seeds", "seconds",
        "seconds_with_trace", "baseline_seconds", "train_macs", "train_macs_with_trace", "baseline_train_macs",
        "saved_wall", "saved_wall_with_trace", "saved_macs", "saved_macs_with_trace", "acc", "baseline_acc",
        "n_ft_mean", "paper_saved",
    ])
    out["best"] = False
    if len(out):
        best = out[out["eta"] > 0] if (out["eta"] > 0).any() else out
        idx = best.groupby(["model", "ratio"])["saved_wall"].idxmax()
        out.loc[idx.values, "best"] = True
    return out


def _pct(x: float) -> str:
    return "--" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f}"


def time_savings_latex(table: pd.DataFrame) -> str:
    """The time-savings table as a booktabs tabular; the paper's "up to" value sits on the row
    of our best eta of each (model, r)."""
    header = (r"Model & $r$ & $\eta$ & Wall clock & + trace & Train MACs & + trace & "
              r"$\Delta$acc & Paper (up to) \\")
    blocks = []
    for _, sub in table.groupby(["model", "ratio"], sort=False):
        block = []
        for _, r in sub.iterrows():
            saved = _pct(r["saved_wall"])
            block.append([
                tex_escape(r["label"]), num(r["ratio"]), num(r["eta"]),
                f"\\textbf{{{saved}}}" if r["best"] else saved,
                _pct(r["saved_wall_with_trace"]), _pct(r["saved_macs"]), _pct(r["saved_macs_with_trace"]),
                f"{r['acc'] - r['baseline_acc']:+.2f}", _pct(r["paper_saved"]) if r["best"] else "",
            ])
        blocks.append(block)
    thetas = ", ".join(num(t) for t in sorted(table["theta"].unique())) if len(table) else "--"
    return _tabular([
        "% Time saved by ICE-Pick vs the baseline, percent (generated by icepick.reporting; do not edit).",
        f"% 1 - ICE-Pick / baseline, means over seeds; theta = {thetas}%. Bold: our best eta per (model, r),",
        "% beside which the paper's 'up to' value stands. Delta acc: final accuracy minus the baseline's, points.",
    ], "lrrrrrrrr", header, blocks)


def threshold_summary(runs: pd.DataFrame, models: Sequence[str] | None = None) -> pd.DataFrame:
    """Per (model, theta): mean/std final accuracy and seconds, mean #Ft (ICE-Pick runs)."""
    ice = _icepick_runs(runs)
    rows = []
    for model in order_models(ice["model"], models):
        for theta, cell in ice[ice["model"] == model].groupby("theta"):
            rows.append({
                "model": model, "theta": float(theta), "n_seeds": int(cell["seed"].nunique()),
                "acc_mean": cell["final_acc"].mean(), "acc_std": cell["final_acc"].std(ddof=1),
                "seconds_mean": cell["total_seconds"].mean(), "seconds_std": cell["total_seconds"].std(ddof=1),
                "n_ft_mean": cell["n_finetunes"].mean(),
            })
    return pd.DataFrame(rows, columns=["model", "theta", "n_seeds", "acc_mean", "acc_std", "seconds_mean",
                                       "seconds_std", "n_ft_mean"])




# ---------------------------------------------------------------- the ablation and the criteria

#: How the ablation's arms are named in its table and figure, in display order.
ARM_LABELS = {
    "icepick": "ICE-Pick",
    "no_threshold": "no threshold",
    "no_freezing": "no freezing",
    "fixed_lr": "fixed lr (no Eq. 1)",
    "baseline": "baseline",
    "oneshot": "one-shot",
}
assert list(ARM_LABELS) == ["icepick", *ABLATION_ARMS]

#: The columns of the per-cell statistics of the ablation and criteria tables.
_STAT_COLUMNS = ["n_seeds", "acc_mean", "acc_std", "n_ft_mean", "train_macs_mean", "train_macs_std",
                 "seconds_mean", "seconds_std", "macs_per_ft_image"]


def _stats(cell: pd.DataFrame) -> dict[str, Any]:
    """Means (and standard deviations over seeds) of one cell's runs: final accuracy,
    fine-tunings, training MACs and seconds of the prune loop (the freeze trace apart, as in
    the time savings), and the training MACs per fine-tuned image."""
    def std(col: str) -> float:
        return float(cell[col].std(ddof=1)) if len(cell) > 1 else math.nan

    per_image = math.nan  # training MACs per fine-tuned image: what freezing saves
    if "total_ft_samples" in cell and (cell["total_ft_samples"] > 0).all():
        per_image = float((cell["total_train_macs"] / cell["total_ft_samples"]).mean())

    return {
        "n_seeds": int(cell["seed"].nunique()),
        "acc_mean": float(cell["final_acc"].mean()), "acc_std": std("final_acc"),
        "n_ft_mean": float(cell["n_finetunes"].mean()),
        "train_macs_mean": float(cell["total_train_macs"].mean()), "train_macs_std": std("total_train_macs"),
        "seconds_mean": float(cell["total_seconds"].mean()), "seconds_std": std("total_seconds"),
        "macs_per_ft_image": per_image,
    }


def _criterion_column(runs: pd.DataFrame) -> pd.Series:
    """The criterion of every run (records written before criteria existed were all the paper's)."""
    if "criterion" not in runs:
        return pd.Series(DEFAULT_CRITERION, index=runs.index)
    return runs["criterion"].fillna(DEFAULT_CRITERION).astype(str)


def with_arms(runs: pd.DataFrame) -> pd.DataFrame:
    """The ablation's runs (the paper's criterion) with an ``arm`` column (:func:`icepick.grid.ablation_arm`)."""
    runs = runs[_criterion_column(runs) == DEFAULT_CRITERION]
    arms = [ablation_arm(m, lr, eta, theta) for m, lr, eta, theta in
            zip(runs["method"], runs["lr_policy"], runs["eta"], runs["theta"])]
    return runs.assign(arm=pd.Series(arms, index=runs.index, dtype=object))


def ablation_table(runs: pd.DataFrame, roles: Mapping[str, str] | None = None,
                   models: Sequence[str] | None = None) -> pd.DataFrame:
    """The ablation from its runs: one row per (model, arm), arms in :data:`ARM_LABELS` order.

    Columns: model, label, arm, arm_label, ratio, eta, theta, then n_seeds, acc_mean, acc_std,
    n_ft_mean, train_macs_mean, train_macs_std, seconds_mean, seconds_std, macs_per_ft_image, and the accuracy
    difference to ICE-Pick and the training MACs and seconds relative to ICE-Pick's
    (``acc_vs_icepick`` in points, ``macs_vs_icepick`` and ``seconds_vs_icepick`` as ratios).
    """
    runs = with_arms(runs)
    rows = []
    for model in order_models(runs["model"], models):
        sub = runs[runs["model"] == model]
        cells = {arm: sub[sub["arm"] == arm] for arm in ARM_LABELS if (sub["arm"] == arm).any()}
        ref = _stats(cells["icepick"]) if "icepick" in cells else None
        for arm, cell in cells.items():
            stats = _stats(cell)
            rows.append({
                "model": model, "label": label(model, roles), "arm": arm, "arm_label": ARM_LABELS[arm],
                "ratio": float(cell["ratio"].iloc[0]), "eta": float(cell["eta"].iloc[0]),
                "theta": float(cell["theta"].iloc[0]), **stats,
                "acc_vs_icepick": stats["acc_mean"] - ref["acc_mean"] if ref else math.nan,
                "macs_vs_icepick": _ratio(stats["train_macs_mean"], ref["train_macs_mean"]) if ref else math.nan,
                "seconds_vs_icepick": _ratio(stats["seconds_mean"], ref["seconds_mean"]) if ref else math.nan,
            })
    return pd.DataFrame(rows, columns=["model", "label", "arm", "arm_label", "ratio", "eta", "theta", *_STAT_COLUMNS,
                                       "acc_vs_icepick", "macs_vs_icepick", "seconds_vs_icepick"])


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def _macs(x: float) -> str:
    """Training MACs in units of 10^12 (TMAC)."""
    return "--" if math.isnan(x) else f"{x / 1e12:.3g}"


def ablation_latex(table: pd.DataFrame) -> str:
    """The ablation as a booktabs tabular: one block per model, one row per arm."""
    header = (r"Model & Arm & $\eta$ & $\theta$ & Accuracy (\%) & \#Ft & Train TMAC & Time (s) & Time / ICE-Pick \\")
    blocks = []
    for _, sub in table.groupby("model", sort=False):
        blocks.append([[
            tex_escape(r["label"]), tex_escape(r["arm_label"]), num(r["eta"]),
            num(r["theta"]) if r["arm"] not in ("baseline", "oneshot", "no_threshold") else "--",
            _pm(r["acc_mean"], r["acc_std"]), f"{r['n_ft_mean']:.1f}", _macs(r["train_macs_mean"]),
            _pm(r["seconds_mean"], r["seconds_std"], 1), "--" if math.isnan(r["seconds_vs_icepick"]) else f"{r['seconds_vs_icepick']:.2f}",
        ] for _, r in sub.iterrows()])
    ratios = ", ".join(f"{display_name(m)} r={num(r)}" for m, r in table.groupby("model", sort=False)["ratio"].first().items())
    return _tabular([
        "% Ablation of ICE-Pick (generated by icepick.reporting; do not edit).",
        f"% Pruning ratios: {ratios}. Means over seeds (+- std); #Ft: fine-tunings per run (the one-shot",
        "% baseline: one, of one epoch per block); training MACs and time of the prune loop (freeze trace apart).",
    ], "llrrrrrrr", header, blocks)


def criteria_table(runs: pd.DataFrame, roles: Mapping[str, str] | None = None,
                   models: Sequence[str] | None = None, criteria: Sequence[str] | None = None) -> pd.DataFrame:
    """The criteria group from its runs: one row per (model, criterion, method).

    Columns: model, label, criterion, method, ratio, eta, theta, then n_seeds, acc_mean,
    acc_std, n_ft_mean, train_macs_mean, train_macs_std, seconds_mean, seconds_std,
    macs_per_ft_image. Criteria in
    the order of ``criteria`` (default: as found, the paper's first).
    """
    runs = runs.assign(criterion=_criterion_column(runs))
    found = list(dict.fromkeys(runs["criterion"]))
    order = list(criteria) if criteria else sorted(found, key=lambda c: (c != DEFAULT_CRITERION, found.index(c)))
    rows = []
    for model in order_models(runs["model"], models):
        sub = runs[runs["model"] == model]
        for criterion in [c for c in order if c in found]:
            for method in ("icepick", "baseline"):
                cell = sub[(sub["criterion"] == criterion) & (sub["method"] == method)]
                if cell.empty:
                    continue
                rows.append({
                    "model": model, "label": label(model, roles), "criterion": criterion, "method": method,
                    "ratio": float(cell["ratio"].iloc[0]), "eta": float(cell["eta"].iloc[0]),
                    "theta": float(cell["theta"].iloc[0]), **_stats(cell),
                })
    return pd.DataFrame(rows, columns=["model", "label", "criterion", "method", "ratio", "eta", "theta", *_STAT_COLUMNS])


def criteria_latex(table: pd.DataFrame) -> str:
    """The criteria table as a booktabs tabular: one block per model, ICE-Pick and the baseline
    side by side for each criterion."""
    header = (r"Model & Criterion & Acc.\ ICE-Pick (\%) & Acc.\ baseline (\%) & \#Ft ICE-Pick & "
              r"TMAC ICE-Pick & TMAC baseline & Time ICE-Pick (s) & Time baseline (s) \\")
    blocks = []
    for model, sub in table.groupby("model", sort=False):
        block = []
        for criterion, cell in sub.groupby("criterion", sort=False):
            by = {r["method"]: r for _, r in cell.iterrows()}
            ice, base = by.get("icepick"), by.get("baseline")

            def get(r: Any, fmt: Any) -> str:
                return "--" if r is None else fmt(r)

            block.append([
                tex_escape(cell["label"].iloc[0]), tex_escape(str(criterion)),
                get(ice, lambda r: _pm(r["acc_mean"], r["acc_std"])), get(base, lambda r: _pm(r["acc_mean"], r["acc_std"])),
                get(ice, lambda r: f"{r['n_ft_mean']:.1f}"),
                get(ice, lambda r: _macs(r["train_macs_mean"])), get(base, lambda r: _macs(r["train_macs_mean"])),
                get(ice, lambda r: f"{r['seconds_mean']:.1f}"), get(base, lambda r: f"{r['seconds_mean']:.1f}"),
            ])
        blocks.append(block)
    setting = table.loc[table["method"] == "icepick", ["ratio", "eta", "theta"]].drop_duplicates()
    what = "; ".join(f"r={num(r.ratio)}, eta={num(r.eta)}, theta={num(r.theta)}" for r in setting.itertuples()) or "--"
    return _tabular([
        "% ICE-Pick and the baseline under each pruning criterion (generated by icepick.reporting; do not edit).",
        f"% ICE-Pick: {what}. Means over seeds (+- std); #Ft: fine-tunings per run (the baseline: every step);",
        "% training MACs and time of the prune loop (freeze trace apart).",
    ], "llrrrrrrr", header, blocks)
