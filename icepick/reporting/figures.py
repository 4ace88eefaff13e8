"""The paper's figures (matplotlib Agg + seaborn), each drawn from aggregated tables alone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from icepick.records import atomic_path
from icepick.reporting.paper import display_name, label, order_models
from icepick.reporting.tables import ARM_LABELS, ablation_table, criteria_table, threshold_summary

__all__ = ["accuracy_curves", "plot_weight_shift", "plot_accuracy", "plot_thresholds", "plot_lr_schedule",
           "plot_ablation", "plot_criteria", "plot_comparison"]

def accuracy_curves(runs: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per step of every run, with step 0 = the unpruned model (acc_orig)."""
    keys = ["model", "experiment", "seed"]
    cols = [*keys, "method", "lr_policy", "ratio", "eta", "theta"]
    start = runs[cols].assign(step=0, acc=runs["acc_orig"].values)
    body = steps[[*cols, "step", "acc"]]
    return pd.concat([start, body], ignore_index=True).sort_values([*keys, "step"], kind="stable")



# ---------------------------------------------------------------- figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    return plt, sns


def _save(fig: Any, out: str | Path, png: str | Path | None = None) -> None:
    """Save a figure as PDF (and PNG), atomically; then close it."""
    import matplotlib.pyplot as plt

    for path, fmt in ((out, Path(out).suffix.lstrip(".") or "pdf"), (png, "png")):
        if path is None:
            continue
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, bbox_inches="tight", dpi=150)
    plt.close(fig)


def plot_weight_shift(shift: pd.DataFrame, out: str | Path, png: str | Path | None = None,
                      models: Sequence[str] | None = None) -> None:
    """Figure 2: per model, the L1 weight shift of every layer (x: layer index) after each
    pruning step (one line per step, colour = step)."""
    plt, sns = _pyplot()
    order = order_models(shift["model"], models)
    fig, axes = plt.subplots(1, max(1, len(order)), figsize=(4.2 * max(1, len(order)), 3.2), squeeze=False, layout="constrained")
    for ax, model in zip(axes[0], order):
        sub = shift[shift["model"] == model]
        steps = sorted(sub["step"].unique())
        colors = sns.color_palette("viridis", len(steps))
        for color, step in zip(colors, steps):
            s = sub[sub["step"] == step].sort_values("layer_index")
            ax.plot(s["layer_index"], s["shift"], color=color, lw=1.0, label=f"step {step}")
        ax.set_title(display_name(model))
        ax.set_xlabel("layer index (forward order)")
        ax.set_ylabel("L1 weight shift")
        if (sub["shift"] > 0).all():
            ax.set_yscale("log")
        if steps:
            sm = plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(min(steps), max(steps)))
            fig.colorbar(sm, ax=ax, label="pruning step")
    if not order:
        axes[0][0].text(0.5, 0.5, "no data", ha="center", va="center")
    fig.suptitle("Weight shift after full fine-tuning during iterative pruning")
    _save(fig, out, png)


def plot_accuracy(runs: pd.DataFrame, steps: pd.DataFrame, out: str | Path, png: str | Path | None = None,
                  models: Sequence[str] | None = None, roles: Mapping[str, str] | None = None) -> None:
    """Figure 3: accuracy (mean over seeds, band = one std) against the pruning step, one
    panel per (r, model), one line per eta plus the baseline; mean total time in the legend."""
    plt, sns = _pyplot()
    from matplotlib.ticker import MaxNLocator

    runs = runs[(runs["method"] == "baseline") | (runs["lr_policy"] == "icepick")]
    curves = accuracy_curves(runs, steps[steps["experiment"].isin(runs["experiment"])])
    order = order_models(runs["model"], models)
    ratios = sorted(runs["ratio"].unique())
    ncols, nrows = max(1, len(order)), max(1, len(ratios))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.3 * nrows), squeeze=False, layout="constrained")
    etas = sorted(runs.loc[runs["method"] == "icepick", "eta"].unique())
    palette = dict(zip(etas, sns.color_palette("colorblind", max(3, len(etas)))))
    letter = iter("abcdefghijklmnopqrstuvwxyz")
    for i, ratio in enumerate(ratios):
        for j, model in enumerate(order):
            ax = axes[i][j]
            sub = runs[(runs["model"] == model) & (runs["ratio"] == ratio)]
            lines = [("baseline", None)] + [("icepick", e) for e in etas]
            for method, eta in lines:
                sel = sub[sub["method"] == method] if eta is None else sub[(sub["method"] == method) & (sub["eta"] == eta)]
                if sel.empty:
                    continue
                c = curves[curves["experiment"].isin(sel["experiment"]) & (curves["model"] == model)]
                stat = c.groupby("step")["acc"].agg(["mean", "std"]).fillna({"std": 0.0})
                secs = sel["total_seconds"].mean()
                legend = f"baseline ({secs:.0f} s)" if eta is None else f"η = {eta:g} ({secs:.0f} s)"
                color = "black" if eta is None else palette[eta]
                ax.plot(stat.index, stat["mean"], color=color, lw=1.2, label=legend, ls="--" if eta is None else "-",
                        zorder=3 if eta is None else 2)
                ax.fill_between(stat.index, stat["mean"] - stat["std"], stat["mean"] + stat["std"], color=color, alpha=0.2, lw=0)
            thetas = sorted(sub.loc[sub["method"] == "icepick", "theta"].unique())
            theta = ", ".join(f"{t:g}%" for t in thetas) or "--"
            ax.set_title(f"({next(letter)}) {label(model, roles)}, r = {ratio:g}, θ = {theta}", fontsize=9)
            ax.set_xlabel("pruning step (blocks pruned)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel("test accuracy (%)")
            ax.legend(fontsize=7, title="total time (mean)", title_fontsize=7)
    _save(fig, out, png)


def plot_thresholds(runs: pd.DataFrame, out: str | Path, png: str | Path | None = None,
                    models: Sequence[str] | None = None) -> None:
    """Final accuracy (top row) and total time (bottom row) against theta, one column per model."""
    plt, _ = _pyplot()
    ts = threshold_summary(runs, models)
    order = order_models(ts["model"], models)
    ncols = max(1, len(order))
    fig, axes = plt.subplots(2, ncols, figsize=(3.6 * ncols, 5.6), squeeze=False, sharex=True, layout="constrained")
    for j, model in enumerate(order):
        sub = ts[ts["model"] == model].sort_values("theta")
        ratio = runs.loc[runs["model"] == model, "ratio"]
        eta = runs.loc[runs["model"] == model, "eta"]
        axes[0][j].errorbar(sub["theta"], sub["acc_mean"], yerr=sub["acc_std"].fillna(0), marker="o", capsize=3)
        axes[0][j].set_title(f"{display_name(model)} (r = {ratio.iloc[0]:g}, η = {eta.iloc[0]:g})", fontsize=9)
        axes[0][j].set_ylabel("final accuracy (%)")
        axes[1][j].errorbar(sub["theta"], sub["seconds_mean"], yerr=sub["seconds_std"].fillna(0), marker="o", capsize=3, color="C1")
        axes[1][j].set_ylabel("total time (s)")
        axes[1][j].set_xlabel("threshold θ (points)")
        axes[1][j].set_xticks(sub["theta"])
    _save(fig, out, png)


def plot_lr_schedule(out: str | Path, png: str | Path | None = None, base: float = 1e-3, delta: float = 7.5e-4,
                     p: float = 0.12, beta: float = 50.0) -> None:
    """Eq. 1: max_lr against alpha (fraction of parameters left), from icepick.schedule.max_lr."""
    from icepick.schedule import max_lr

    plt, _ = _pyplot()
    alphas = np.linspace(0.5, 1.0, 501)
    lrs = [max_lr(float(a), base, delta, p, beta) for a in alphas]
    fig, ax = plt.subplots(figsize=(4.8, 3.2), layout="constrained")
    ax.plot(alphas, lrs, lw=1.5)
    ax.axvline(1 - p, color="grey", ls=":", lw=1)
    ax.annotate(f"α = 1 − p = {1 - p:g}", (1 - p, base - delta / 2), xytext=(5, 0), textcoords="offset points", fontsize=8)
    ax.set_xlabel("α = params(pruned) / params(original)")
    ax.set_ylabel("max learning rate")
    ax.invert_xaxis()  # pruning proceeds from left to right
    ax.set_title(f"Eq. 1: base = {base:g}, Δ = {delta:g}, p = {p:g}, β = {beta:g}", fontsize=9)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, -3))
    _save(fig, out, png)




def _no_data(axes: Any) -> None:
    axes[0][0].text(0.5, 0.5, "no data", ha="center", va="center")


def plot_ablation(runs: pd.DataFrame, out: str | Path, png: str | Path | None = None,
                  models: Sequence[str] | None = None, roles: Mapping[str, str] | None = None) -> None:
    """The ablation: final accuracy against training MACs (left) and pruning time (right), one
    row per model, one marker per arm (mean over seeds, bars = one std)."""
    plt, sns = _pyplot()
    table = ablation_table(runs, roles, models)
    order = order_models(table["model"], models)
    nrows = max(1, len(order))
    fig, axes = plt.subplots(nrows, 2, figsize=(9.0, 3.2 * nrows), squeeze=False, layout="constrained")
    colors = dict(zip(ARM_LABELS, sns.color_palette("colorblind", len(ARM_LABELS))))
    markers = dict(zip(ARM_LABELS, "o^sDvX"))
    for i, model in enumerate(order):
        sub = table[table["model"] == model]
        for j, (x, xerr, xlabel) in enumerate((("train_macs_mean", "train_macs_std", "training MACs (prune loop)"),
                                               ("seconds_mean", "seconds_std", "pruning time (s)"))):
            ax = axes[i][j]
            for _, r in sub.iterrows():
                ax.errorbar(r[x], r["acc_mean"], xerr=np.nan_to_num(r[xerr]), yerr=np.nan_to_num(r["acc_std"]),
                            marker=markers[r["arm"]], color=colors[r["arm"]], capsize=3, ls="none",
                            label=r["arm_label"], ms=6)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("final accuracy (%)")
            first = sub.iloc[0]
            ax.set_title(f"{label(model, roles)}, r = {first['ratio']:g}", fontsize=9)
        axes[i][0].legend(fontsize=7)
    if not order:
        _no_data(axes)
    _save(fig, out, png)


#: The panels of the criteria figure: column of criteria_table, y label.
_CRITERIA_PANELS = (
    ("acc_mean", "acc_std", "final accuracy (%)"),
    ("n_ft_mean", None, "fine-tunings per run"),
    ("train_macs_mean", "train_macs_std", "training MACs"),
    ("seconds_mean", "seconds_std", "pruning time (s)"),
)


def plot_criteria(runs: pd.DataFrame, out: str | Path, png: str | Path | None = None,
                  models: Sequence[str] | None = None, roles: Mapping[str, str] | None = None) -> None:
    """ICE-Pick and the baseline under each criterion: final accuracy, fine-tunings per run,
    training MACs and time (rows), one column per model; bars = means over seeds, whiskers = one std."""
    plt, sns = _pyplot()
    table = criteria_table(runs, roles, models)
    order = order_models(table["model"], models)
    ncols = max(1, len(order))
    fig, axes = plt.subplots(len(_CRITERIA_PANELS), ncols, figsize=(4.2 * ncols, 2.4 * len(_CRITERIA_PANELS)),
                             squeeze=False, layout="constrained")
    colors = dict(zip(("icepick", "baseline"), sns.color_palette("colorblind", 2)))
    names = {"icepick": "ICE-Pick", "baseline": "baseline"}
    for j, model in enumerate(order):
        sub = table[table["model"] == model]
        criteria = list(dict.fromkeys(sub["criterion"]))
        x = np.arange(len(criteria))
        for i, (col, err, ylabel) in enumerate(_CRITERIA_PANELS):
            ax = axes[i][j]
            for k, method in enumerate(("icepick", "baseline")):
                cell = sub[sub["method"] == method].set_index("criterion").reindex(criteria)
                yerr = np.nan_to_num(cell[err].to_numpy(dtype=float)) if err else None
                ax.bar(x + (k - 0.5) * 0.38, cell[col].to_numpy(dtype=float), 0.38, yerr=yerr, capsize=2,
                       color=colors[method], label=names[method])
            ax.set_xticks(x, criteria, fontsize=8)
            ax.set_ylabel(ylabel, fontsize=8)
            if i == 0:
                ax.set_title(f"{label(model, roles)}, r = {sub['ratio'].iloc[0]:g}", fontsize=9)
                ax.legend(fontsize=7)
        lo = sub["acc_mean"].min() - 2 * max(1.0, float(np.nan_to_num(sub["acc_std"]).max()))
        axes[0][j].set_ylim(max(0.0, lo), None)
    if not order:
        _no_data(axes)
    _save(fig, out, png)


def plot_comparison(curves: pd.DataFrame, out: str | Path, png: str | Path | None = None,
                    table: pd.DataFrame | None = None) -> None:
    """ICE-Pick against the iterative baseline on one model (``icepick compare``): test accuracy
    after each pruning step against the cumulative training MACs, one line per method (a filled
    marker: the step was fine-tuned, hollow: skipped), the unpruned accuracy as a dashed line.

    ``curves``: :func:`icepick.reporting.compare.comparison_curves` (ICE-Pick's line starts at
    its freeze trace's MACs); ``table``: :func:`~icepick.reporting.compare.comparison_table`, whose
    fine-tunings and times go into the legend.
    """
    from icepick.reporting.compare import METHOD_LABELS, METHODS

    plt, sns = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.6), layout="constrained")
    top = float(curves["train_macs"].max()) if len(curves) else 0.0
    unit, scale = next(((u, s) for u, s in (("PMAC", 1e15), ("TMAC", 1e12), ("GMAC", 1e9), ("MMAC", 1e6))
                        if top >= s), ("MAC", 1.0))
    colors = dict(zip(METHODS, sns.color_palette("colorblind", len(METHODS))))
    runs = table.set_index("method") if table is not None else None
    for method in METHODS:
        sub = curves[curves["method"] == method].sort_values("step")
        if sub.empty:
            continue
        name = METHOD_LABELS[method]
        if runs is not None and method in runs.index:
            run = runs.loc[method]
            traced = float(run["trace_seconds"] or 0) > 0
            name += (f": {int(run['n_finetunes'])} of {int(run['n_steps'])} fine-tuned, "
                     f"{float(run['total_seconds_with_trace']):.1f} s" + (" with the trace" if traced else ""))
        x = sub["train_macs"] / scale
        ax.plot(x, sub["acc"], color=colors[method], lw=1.2, ls="-" if method == "icepick" else "--", label=name)
        tuned = sub["finetuned"].astype(bool)
        ax.scatter(x[~tuned], sub["acc"][~tuned], facecolors="white", edgecolors=colors[method], s=14, zorder=3)
        ax.scatter(x[tuned], sub["acc"][tuned], color=colors[method], s=14, zorder=4)
    if len(curves):
        orig = float(curves.loc[curves["step"] == 0, "acc"].iloc[0])
        ax.axhline(orig, color="grey", lw=0.8, ls=":", label=f"unpruned ({orig:.2f}%)")
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    traced = bool(len(curves) and curves.loc[curves["step"] == 0, "train_macs"].max() > 0)
    ax.set_xlabel(f"cumulative training MACs ({unit})" + ("; ICE-Pick's start with its freeze trace" if traced else ""))
    ax.set_ylabel("test accuracy (%)")
    title = "ICE-Pick against the iterative baseline"
    if table is not None and len(table):
        first = table.iloc[0]
        title += f": {first['model']}, r = {first['ratio']:g}, θ = {first['theta']:g}, η = {first['eta']:g}"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    _save(fig, out, png)
