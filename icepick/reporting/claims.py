"""claims.md: every quantitative claim of the paper, the paper's number, ours, the tolerance
applied and whether it holds."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from icepick.reporting.paper import (
    PAPER_HEADLINE_SAVED, PAPER_MODELS, PAPER_RUNS, PAPER_TABLE1, PAPER_TIME_SAVED, RECIPE_PRETRAINED_ACC,
    TOL_ACC_POINTS, TOL_COMPARABLE_POINTS, TOL_EARLY_RHO, TOL_FEWER_FT, TOL_FT_RELATIVE, TOL_MAINTAIN_POINTS,
    TOL_ORDER_RHO, TOL_SAVED_POINTS, TOL_TIME_RELATIVE, display_name, num, order_models, paper_model,
)
from icepick.reporting.tables import ablation_table, lr_name, table1, threshold_summary, time_savings

__all__ = ["spearman", "weight_shift_stats", "claims", "claims_markdown", "verdicts", "CLAIM_COLUMNS", "CHECKS"]

# ---------------------------------------------------------------- analysis helpers


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when undefined."""
    rx = pd.Series(np.asarray(x, dtype=float)).rank().to_numpy()
    ry = pd.Series(np.asarray(y, dtype=float)).rank().to_numpy()
    if len(rx) < 2 or np.std(rx) == 0 or np.std(ry) == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def weight_shift_stats(shift: pd.DataFrame) -> pd.DataFrame:
    """Per model: Spearman(layer index, mean shift over steps) ('earlier layers shift less'
    when positive) and the mean Spearman between step 1's shifts and each later step's
    ('the ordering of layers is maintained')."""
    rows = []
    for model, sub in shift.groupby("model", sort=False):
        mean = sub.groupby("layer_index")["shift"].mean()
        wide = sub.pivot_table(index="layer_index", columns="step", values="shift")
        steps = sorted(wide.columns)
        rhos = [spearman(wide[steps[0]], wide[s]) for s in steps[1:]]
        rhos = [r for r in rhos if not math.isnan(r)]
        consecutive = [spearman(wide[a], wide[b]) for a, b in zip(steps, steps[1:])]
        consecutive = [r for r in consecutive if not math.isnan(r)]
        n = len(mean)
        third = max(1, n // 3)
        rows.append({
            "model": model, "n_layers": n, "n_steps": len(steps),
            "rho_index_shift": spearman(mean.index, mean.values),
            "rho_first_vs_later": float(np.mean(rhos)) if rhos else math.nan,
            "rho_consecutive": float(np.mean(consecutive)) if consecutive else math.nan,
            "shift_first_third": float(mean.iloc[:third].mean()),
            "shift_last_third": float(mean.iloc[-third:].mean()),
        })
    return pd.DataFrame(rows, columns=["model", "n_layers", "n_steps", "rho_index_shift", "rho_first_vs_later",
                                       "rho_consecutive", "shift_first_third", "shift_last_third"])


# ---------------------------------------------------------------- claims


def _fmt(x: Any, digits: int = 1, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}{unit}"


def _holds(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "no")


def _ours_for_role(models: Iterable[str], role: str, roles: Mapping[str, str] | None) -> str | None:
    for m in models:
        if paper_model(m, roles) == role:
            return m
    return None


#: Columns of claims.csv. ``scale`` marks a claim whose number depends on the scale of the
#: experiment (model depth, data set, hardware): a run at another scale can test its direction
#: but is not expected to reproduce its number.
CLAIM_COLUMNS = ["id", "claim", "source", "paper", "ours", "tolerance", "holds", "scale"]


@dataclass
class _Claims:
    """What every claim check reads (the runs split by group, the derived tables), and the rows."""

    runs: pd.DataFrame
    weight_shift: pd.DataFrame | None
    pretrain: pd.DataFrame | None
    roles: Mapping[str, str] | None
    order: list[str]
    savings: pd.DataFrame = field(init=False)
    ice_savings: pd.DataFrame = field(init=False)
    t1: pd.DataFrame = field(init=False)
    thresholds: pd.DataFrame = field(init=False)
    ablation: pd.DataFrame = field(init=False)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        groups = self.runs["group"].fillna("").astype(str) if "group" in self.runs else pd.Series("", index=self.runs.index)
        member = lambda g: self.runs[groups.str.split(";").apply(lambda gs: g in gs)]  # noqa: E731
        none = self.runs.iloc[:0]
        fig3, tab1, thr, abl = member("fig3"), member("table1"), member("thresholds"), member("ablation")
        self.savings = time_savings(fig3 if len(fig3) else none, self.roles, self.order)
        has_ice = (self.savings["eta"] > 0).any()
        self.ice_savings = self.savings[self.savings["eta"] > 0] if has_ice else self.savings
        self.t1 = table1(tab1 if len(tab1) else none, self.roles, self.order)
        self.thresholds = threshold_summary(thr if len(thr) else none, self.order)
        self.ablation = ablation_table(abl if len(abl) else none, self.roles, self.order)

    def arm(self, model: str, arm: str) -> pd.Series | None:
        """The ablation table's row of ``model`` and ``arm``, or None."""
        row = self.ablation[(self.ablation["model"] == model) & (self.ablation["arm"] == arm)]
        return row.iloc[0] if len(row) else None

    def add(self, cid: str, claim: str, source: str, paper: str, ours: str, tolerance: str, ok: bool | None,
            scale: bool = False) -> None:
        self.rows.append({"id": cid, "claim": claim, "source": source, "paper": paper, "ours": ours,
                          "tolerance": tolerance, "holds": _holds(ok), "scale": "yes" if scale else "no"})

    def who(self, role: str) -> tuple[str | None, str]:
        """Our model standing for the paper's ``role``, and how the claim names them."""
        ours = _ours_for_role(self.order, role, self.roles)
        return ours, display_name(role) + ("" if ours in (None, role) else f" (ours: {display_name(ours)})")


def _time_headline(c: _Claims) -> None:
    """Abstract: up to 87.6 % of the pruning time saved."""
    best = c.ice_savings["saved_wall"].max() if len(c.ice_savings) else math.nan
    c.add("time-headline", "ICE-Pick saves up to 87.6% of the pruning time (best model, r, eta)",
          "Abstract; Sec. 1, 4.2", f"{PAPER_HEADLINE_SAVED:.1f}%", _fmt(best, 1, "%"),
          f"ours >= paper - {TOL_SAVED_POINTS:g} points", None if math.isnan(best) else best >= PAPER_HEADLINE_SAVED - TOL_SAVED_POINTS,
          scale=True)


def _time_per_model(c: _Claims) -> None:
    """Sec. 4.2: the time saved per model and r, "up to" (the best eta)."""
    for ratio in (0.4, 0.6):
        for role in PAPER_MODELS:
            paper = PAPER_TIME_SAVED[(role, ratio)]
            ours_model, who = c.who(role)
            sub = c.ice_savings
            sub = sub[(sub["model"] == ours_model) & np.isclose(sub["ratio"], ratio)] if ours_model else sub.iloc[:0]
            ours = sub["saved_wall"].max() if len(sub) else math.nan
            c.add(f"time-{role}-r{num(ratio)}", f"Time saved at r = {num(ratio)}, {who}, best eta (theta = 1.5%)",
                  "Sec. 4.2, Fig. 3", f"{paper:.1f}%", _fmt(ours, 1, "%"), f"|ours - paper| <= {TOL_SAVED_POINTS:g} points",
                  None if math.isnan(ours) else abs(ours - paper) <= TOL_SAVED_POINTS, scale=True)


def _freezing_lowers_time(c: _Claims) -> None:
    """Sec. 4.2: higher freezing ratios give higher reductions in overall time."""
    for (model, ratio), sub in c.savings.groupby(["model", "ratio"], sort=False):
        sub = sub.sort_values("eta")
        secs = sub["seconds"].to_numpy()
        base_sec = sub["baseline_seconds"].iloc[0]
        ok = bool(len(secs) > 1 and all(b <= a + TOL_TIME_RELATIVE * base_sec for a, b in zip(secs, secs[1:])) and secs[-1] < secs[0])
        ours = ", ".join(f"eta {num(e)}: {s:.1f}%" for e, s in zip(sub["eta"], sub["saved_wall"]))
        c.add(f"freeze-time-{model}-r{num(ratio)}", f"Higher freezing ratios give higher time reductions ({display_name(model)}, r = {num(ratio)})",
              "Sec. 4.2, Fig. 3", "time falls as eta rises", f"saved {ours}",
              f"mean time non-increasing in eta (each step may rise by {TOL_TIME_RELATIVE:.0%} of the baseline's time), lower at the largest eta than at the smallest",
              ok if len(secs) > 1 else None)


def _ratio_lowers_saving(c: _Claims) -> None:
    """Sec. 4.2: a higher pruning ratio gives a lower average reduction in time."""
    for model in c.order:
        by_r = c.ice_savings[c.ice_savings["model"] == model].groupby("ratio")["saved_wall"].mean()
        claim = f"A higher pruning ratio gives a lower average time reduction ({display_name(model)})"
        if len(by_r) >= 2:
            lo, hi = by_r.index.min(), by_r.index.max()
            c.add(f"ratio-time-{model}", claim, "Sec. 4.2", "lower at r = 0.6 than at r = 0.4",
                  f"{by_r[lo]:.1f}% at r = {num(lo)}, {by_r[hi]:.1f}% at r = {num(hi)}",
                  "strictly lower mean saving (over eta > 0) at the larger r", bool(by_r[hi] < by_r[lo]))
        else:
            c.add(f"ratio-time-{model}", claim, "Sec. 4.2", "lower at r = 0.6 than at r = 0.4", "n/a",
                  "strictly lower mean saving at the larger r", None)


def _maintains_accuracy(c: _Claims) -> None:
    """Abstract, Sec. 4.2: ICE-Pick maintains accuracy (against the baseline, Figure 3)."""
    for (model, ratio), sub in c.savings.groupby(["model", "ratio"], sort=False):
        gap = float((sub["baseline_acc"] - sub["acc"]).max())
        c.add(f"accuracy-{model}-r{num(ratio)}", f"ICE-Pick maintains accuracy vs the baseline ({display_name(model)}, r = {num(ratio)}, worst eta)",
              "Abstract; Sec. 4.2, Fig. 3", "similar final accuracy", f"{gap:+.2f} points below the baseline",
              f"at most {TOL_MAINTAIN_POINTS:g} points below the baseline", gap <= TOL_MAINTAIN_POINTS)


def _table1_values(c: _Claims) -> None:
    """Table 1, value by value: mean final accuracy and fine-tunings per run."""
    t1 = c.t1
    for (role, eta, lr), (p_acc, p_ft) in PAPER_TABLE1.items():
        ours_model, who = c.who(role)
        cell = t1[(t1["model"] == ours_model) & np.isclose(t1["eta"], eta) & (t1["lr_policy"] == lr)] if ours_model else t1.iloc[:0]
        what = f"{who}, freeze {eta:.0%}, lr {lr_name(lr)}"
        acc = float(cell["acc_mean"].iloc[0]) if len(cell) else math.nan
        c.add(f"table1-acc-{role}-eta{num(eta)}-{lr}", f"Table 1 final accuracy: {what}", "Table 1",
              f"{p_acc:.2f}%", _fmt(acc, 2, "%"), f"|ours - paper| <= {TOL_ACC_POINTS:g} point",
              None if math.isnan(acc) else abs(acc - p_acc) <= TOL_ACC_POINTS, scale=True)
        ft = float(cell["n_ft_mean"].iloc[0]) if len(cell) else math.nan
        n = int(cell["n_seeds"].iloc[0]) if len(cell) else 0
        total = int(cell["n_ft_total"].iloc[0]) if len(cell) else "n/a"
        c.add(f"table1-ft-{role}-eta{num(eta)}-{lr}", f"Table 1 fine-tunings per run: {what}", "Table 1",
              f"{p_ft / PAPER_RUNS:.1f} ({p_ft} in {PAPER_RUNS} runs)", f"{_fmt(ft, 1)} ({total} in {n} runs)",
              f"within {TOL_FT_RELATIVE:.0%} of the paper's mean per run",
              None if math.isnan(ft) else abs(ft - p_ft / PAPER_RUNS) <= TOL_FT_RELATIVE * p_ft / PAPER_RUNS, scale=True)


def _fewer_finetunes(c: _Claims) -> None:
    """Sec. 4.3: the scheduler triggers significantly fewer fine-tunings for 2 of 3 models."""
    fewer, parts = 0, []
    for model in order_models(c.t1["model"], c.order):
        sub = c.t1[c.t1["model"] == model]
        fixed = sub.loc[sub["lr_policy"] == "fixed", "n_ft_total"].sum()
        ice = sub.loc[sub["lr_policy"] == "icepick", "n_ft_total"].sum()
        if fixed > 0 and (sub["lr_policy"] == "icepick").any():
            change = ice / fixed - 1
            fewer += change <= -TOL_FEWER_FT
            parts.append(f"{display_name(model)} {change:+.0%}")
    n_models = len(parts)
    c.add("table1-fewer-ft", "The ICE-Pick scheduler triggers significantly fewer fine-tunings than the fixed lr for 2 of 3 models",
          "Sec. 4.3, Table 1", "2 of 3 (ResNet-110 -18%, ResNet-152 -28%, MobileNetV2 -8%)",
          f"{fewer} of {n_models} ({', '.join(parts)})" if parts else "n/a",
          f"'significantly fewer' = at least {TOL_FEWER_FT:.0%} fewer (both freezing ratios summed); holds when it is so for at least two thirds of the models",
          None if not n_models else fewer >= math.ceil(2 * n_models / 3))


def _comparable_accuracy(c: _Claims) -> None:
    """Sec. 3.3, Table 1: the two learning-rate policies reach comparable accuracy."""
    diffs = []
    for _, sub in c.t1.groupby(["model", "eta"], sort=False):
        if set(sub["lr_policy"]) >= {"fixed", "icepick"}:
            a = sub.set_index("lr_policy")["acc_mean"]
            diffs.append(abs(a["icepick"] - a["fixed"]))
    worst = max(diffs) if diffs else math.nan
    c.add("table1-comparable", "ICE-Pick and fixed lr reach comparable final accuracy (Table 1, worst model and eta)",
          "Sec. 3.3, Table 1", "1.00 points (largest gap in Table 1)", _fmt(worst, 2, " points"),
          f"largest |ICE-Pick - fixed| <= {TOL_COMPARABLE_POINTS:g} points", None if math.isnan(worst) else worst <= TOL_COMPARABLE_POINTS)


def _thresholds(c: _Claims) -> None:
    """Sec. 4.2: higher thresholds reduce the time while reasonably maintaining accuracy."""
    for model, sub in c.thresholds.groupby("model", sort=False):
        sub = sub.sort_values("theta")
        secs = sub["seconds_mean"].to_numpy()
        ok_time = bool(len(secs) > 1 and all(b <= a * (1 + TOL_TIME_RELATIVE) for a, b in zip(secs, secs[1:])) and secs[-1] < secs[0])
        c.add(f"thresholds-time-{model}", f"Higher thresholds reduce the time required ({display_name(model)})", "Sec. 4.2",
              "time falls as theta rises (no numbers given)",
              ", ".join(f"theta {num(t)}: {s:.1f} s" for t, s in zip(sub["theta"], secs)),
              f"mean time non-increasing in theta (up to {TOL_TIME_RELATIVE:.0%} noise per step), lower at the largest theta",
              ok_time if len(secs) > 1 else None)
        accs = sub["acc_mean"].to_numpy()
        drop = float(accs[0] - accs[-1]) if len(accs) > 1 else math.nan
        c.add(f"thresholds-accuracy-{model}", f"Higher thresholds still reasonably maintain accuracy ({display_name(model)})", "Sec. 4.2",
              "accuracy reasonably maintained (no numbers given)",
              ", ".join(f"theta {num(t)}: {a:.2f}%" for t, a in zip(sub["theta"], accs)),
              f"final accuracy at the largest theta at most {TOL_MAINTAIN_POINTS:g} points below the smallest theta's",
              None if math.isnan(drop) else drop <= TOL_MAINTAIN_POINTS)


def _ablation_pairs(c: _Claims, arm: str) -> list[tuple[str, pd.Series, pd.Series]]:
    """(model, ICE-Pick's row, ``arm``'s row) of every model whose ablation has both."""
    out = []
    for model in order_models(c.ablation["model"], c.order):
        ice, other = c.arm(model, "icepick"), c.arm(model, arm)
        if ice is not None and other is not None:
            out.append((model, ice, other))
    return out


def _ablation_threshold(c: _Claims) -> None:
    """Sec. 1, 3: skipping the fine-tunings of steps whose drop stays under theta saves time,
    while still maintaining similar accuracy (ICE-Pick against itself without the threshold)."""
    pairs = _ablation_pairs(c, "no_threshold")
    for model, ice, other in pairs:
        name = display_name(model)
        c.add(f"ablation-threshold-time-{model}", f"Skipping fine-tunings under the threshold saves time ({name}; ablation)",
              "Sec. 1, 3.1", "faster than fine-tuning at every step (no numbers given)",
              f"{ice['seconds_mean']:.1f} s with the threshold, {other['seconds_mean']:.1f} s without "
              f"({ice['n_ft_mean']:.1f} vs {other['n_ft_mean']:.1f} fine-tunings per run)",
              f"mean time with the threshold at least {TOL_TIME_RELATIVE:.0%} (timing noise) below that without",
              bool(ice["seconds_mean"] < (1 - TOL_TIME_RELATIVE) * other["seconds_mean"]))
        gap = float(other["acc_mean"] - ice["acc_mean"])
        c.add(f"ablation-threshold-accuracy-{model}", f"... while still maintaining similar accuracy ({name}; ablation)",
              "Sec. 1", "similar accuracy (no numbers given)",
              f"{ice['acc_mean']:.2f}% with the threshold, {other['acc_mean']:.2f}% without ({gap:+.2f} points)",
              f"at most {TOL_MAINTAIN_POINTS:g} points below ICE-Pick without the threshold", gap <= TOL_MAINTAIN_POINTS)
    if not pairs:
        c.add("ablation-threshold-time", "Skipping fine-tunings under the threshold saves time (ablation)", "Sec. 1, 3.1",
              "faster than fine-tuning at every step", "n/a",
              f"mean time with the threshold at least {TOL_TIME_RELATIVE:.0%} (timing noise) below that without", None)


def _ablation_freezing(c: _Claims) -> None:
    """Sec. 3.2: frozen layers are not trained, which reduces the fine-tuning costs (ICE-Pick
    against itself without freezing: training MACs per fine-tuned image)."""
    pairs = [(m, i, o) for m, i, o in _ablation_pairs(c, "no_freezing") if i["eta"] > 0]
    for model, ice, other in pairs:
        a, b = ice["macs_per_ft_image"], other["macs_per_ft_image"]
        ok = None if math.isnan(a) or math.isnan(b) else bool(a < b)
        c.add(f"ablation-freezing-cost-{model}",
              f"Freezing reduces the cost of a fine-tuning ({display_name(model)}, eta = {num(ice['eta'])}; ablation)",
              "Sec. 3.2", "cheaper fine-tuning (no numbers given)",
              f"{_fmt(a / 1e6, 1)} vs {_fmt(b / 1e6, 1)} training MMAC per fine-tuned image"
              + ("" if math.isnan(a) or math.isnan(b) else f" ({100 * (1 - a / b):.1f}% less)"),
              "training MACs per fine-tuned image strictly below those without freezing", ok)
    if not pairs:
        c.add("ablation-freezing-cost", "Freezing reduces the cost of a fine-tuning (ablation)", "Sec. 3.2",
              "cheaper fine-tuning", "n/a", "training MACs per fine-tuned image strictly below those without freezing", None)


def _ablation_schedule(c: _Claims) -> None:
    """Sec. 3.3, 4.3: Eq. 1 triggers fewer fine-tunings than the fixed rate for 2 of 3 models, at
    comparable accuracy, here at the ablation's setting (theta and eta other than Table 1's)."""
    pairs = _ablation_pairs(c, "fixed_lr")
    fewer, parts, gaps = 0, [], []
    for model, ice, fixed in pairs:
        if fixed["n_ft_mean"] > 0:
            change = ice["n_ft_mean"] / fixed["n_ft_mean"] - 1
            fewer += change <= -TOL_FEWER_FT
            parts.append(f"{display_name(model)} {change:+.0%}")
        gaps.append(abs(float(ice["acc_mean"] - fixed["acc_mean"])))
    setting = f"theta = {num(pairs[0][1]['theta'])}%, eta = {num(pairs[0][1]['eta'])}" if pairs else "the ablation's setting"
    c.add("ablation-eq1-fewer-ft", f"Eq. 1 triggers significantly fewer fine-tunings than the fixed rate for 2 of 3 models ({setting}; ablation)",
          "Sec. 4.3", "2 of 3 (at Table 1's setting)", f"{fewer} of {len(parts)} ({', '.join(parts)})" if parts else "n/a",
          f"at least {TOL_FEWER_FT:.0%} fewer per run for at least two thirds of the models",
          None if not parts else fewer >= math.ceil(2 * len(parts) / 3))
    worst = max(gaps) if gaps else math.nan
    c.add("ablation-eq1-comparable", f"Eq. 1 and the fixed rate reach comparable accuracy ({setting}; ablation, worst model)",
          "Sec. 3.3", "comparable performance", _fmt(worst, 2, " points"),
          f"largest |Eq. 1 - fixed| <= {TOL_COMPARABLE_POINTS:g} points", None if math.isnan(worst) else worst <= TOL_COMPARABLE_POINTS)


def _ablation_oneshot(c: _Claims) -> None:
    """Sec. 1, 2 (citing Li et al., 2016): iterative pruning that fine-tunes after every step can
    reach better accuracy than one-shot pruning (the baseline against the one-shot baseline,
    which trains as many epochs)."""
    models = [m for m in order_models(c.ablation["model"], c.order)
              if c.arm(m, "baseline") is not None and c.arm(m, "oneshot") is not None]
    for model in models:
        it, one = c.arm(model, "baseline"), c.arm(model, "oneshot")
        diff = float(it["acc_mean"] - one["acc_mean"])
        c.add(f"ablation-oneshot-{model}",
              f"Iterative pruning with a fine-tuning after every step beats one-shot pruning in accuracy ({display_name(model)}; ablation)",
              "Sec. 1, 2 (citing Li et al., 2016)", "better accuracy than one-shot (no numbers given)",
              f"baseline {it['acc_mean']:.2f}%, one-shot {one['acc_mean']:.2f}% ({diff:+.2f} points), the same epochs of training",
              "the baseline's mean final accuracy strictly above the one-shot baseline's", diff > 0)
    if not models:
        c.add("ablation-oneshot", "Iterative pruning with a fine-tuning after every step beats one-shot pruning in accuracy (ablation)",
              "Sec. 1, 2 (citing Li et al., 2016)", "better accuracy than one-shot", "n/a",
              "the baseline's mean final accuracy strictly above the one-shot baseline's", None)


def _weight_shift(c: _Claims) -> None:
    """Sec. 4.1: earlier layers shift less; the ordering of layers is maintained."""
    if c.weight_shift is None or not len(c.weight_shift):
        c.add("shift-early", "Earlier layers tend to see smaller weight shifts", "Sec. 4.1, Fig. 2", "observed", "n/a", f"rho >= {TOL_EARLY_RHO:g}", None)
        c.add("shift-order", "The ordering of layers by shift is generally maintained", "Sec. 4.1, Fig. 2", "observed", "n/a", f"mean rho >= {TOL_ORDER_RHO:g}", None)
        return
    for _, s in weight_shift_stats(c.weight_shift).iterrows():
        name = display_name(s["model"])
        rho = s["rho_index_shift"]
        c.add(f"shift-early-{s['model']}", f"Earlier layers tend to see smaller weight shifts ({name})", "Sec. 4.1, Fig. 2",
              "observed in all three models (figure only)",
              f"Spearman(layer index, shift) = {_fmt(rho, 2)}; mean shift first third {s['shift_first_third']:.3g}, last third {s['shift_last_third']:.3g}",
              f"rho >= {TOL_EARLY_RHO:g}", None if math.isnan(rho) else rho >= TOL_EARLY_RHO)
        rho = s["rho_first_vs_later"]
        c.add(f"shift-order-{s['model']}", f"The ordering of layers by shift is generally maintained across steps ({name})", "Sec. 4.1, Fig. 2",
              "generally maintained (figure only)",
              f"mean Spearman(step 1, step s) = {_fmt(rho, 2)} over {int(s['n_steps'])} steps; consecutive steps {_fmt(s['rho_consecutive'], 2)}",
              f"mean rho >= {TOL_ORDER_RHO:g}", None if math.isnan(rho) else rho >= TOL_ORDER_RHO)


def _pretrained_context(c: _Claims) -> None:
    """Context, not a claim of the paper: pretrained accuracy against the published recipes."""
    for role, (lo, hi) in RECIPE_PRETRAINED_ACC.items():
        ours_model, who = c.who(role)
        acc = math.nan
        if c.pretrain is not None and len(c.pretrain) and ours_model in set(c.pretrain["model"]):
            acc = float(c.pretrain.loc[c.pretrain["model"] == ours_model, "final_test_acc"].iloc[0])
        paper = f"{lo:.1f}-{hi:.1f}%" if lo != hi else f"{lo:.1f}%"
        c.add(f"context-pretrained-{role}", f"Context, not a claim of the paper: pretrained test accuracy with the published recipe, {who}",
              "docs/method.md (published recipes)", paper, _fmt(acc, 2, "%"), f"within {TOL_ACC_POINTS:g} point of the range",
              None if math.isnan(acc) else lo - TOL_ACC_POINTS <= acc <= hi + TOL_ACC_POINTS, scale=True)


#: Every claim check, in the order of claims.md.
CHECKS = (
    _time_headline, _time_per_model, _freezing_lowers_time, _ratio_lowers_saving, _maintains_accuracy,
    _table1_values, _fewer_finetunes, _comparable_accuracy, _thresholds, _ablation_threshold, _ablation_freezing,
    _ablation_schedule, _ablation_oneshot, _weight_shift, _pretrained_context,
)


def claims(
    runs: pd.DataFrame,
    weight_shift: pd.DataFrame | None = None,
    pretrain: pd.DataFrame | None = None,
    roles: Mapping[str, str] | None = None,
    models: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Every quantitative claim of the paper checked against our runs.

    Args:
        runs: results/summary/runs.csv (all groups; ``group`` names them, ';'-separated).
        weight_shift: results/summary/weight_shift.csv.
        pretrain: results/summary/pretrain.csv.
        roles: our model -> the paper's model it stands for.
        models: our models in display order.

    Returns:
        One row per claim (:data:`CLAIM_COLUMNS`): id, claim, source, paper, ours, tolerance,
        holds ('yes', 'no', or 'n/a' where our results lack what the claim needs), and scale
        ('yes' where the claim's number depends on the scale of the experiment).
    """
    context = _Claims(runs, weight_shift, pretrain, roles, order_models(runs["model"], models))
    for check in CHECKS:
        check(context)
    return pd.DataFrame(context.rows, columns=CLAIM_COLUMNS)


def verdicts(table: pd.DataFrame, other: pd.DataFrame | None = None, other_label: str = "") -> pd.Series:
    """The "holds" cell of each claim, read against another experiment's claims (same ids) when given.

    'no (also <label>)': it fails there too, so the scale of this experiment does not excuse it;
    'no (holds <label>)': it holds there; 'no (scale)': its number depends on the scale of the
    experiment and no other run contradicts that (none given, or 'n/a' there); 'yes (not
    <label>)': it holds here and fails there; otherwise the holds value itself.
    """
    scale = table["scale"] == "yes" if "scale" in table else pd.Series(False, index=table.index)
    there = dict(zip(other["id"], other["holds"])) if other is not None else {}
    out = []
    for i, r in table.iterrows():
        elsewhere = there.get(r["id"])
        if r["holds"] == "no" and elsewhere == "no":
            out.append(f"no (also {other_label})")
        elif r["holds"] == "no" and elsewhere == "yes":
            out.append(f"no (holds {other_label})")
        elif r["holds"] == "no" and scale[i]:
            out.append("no (scale)")
        elif r["holds"] == "yes" and elsewhere == "no":
            out.append(f"yes (not {other_label})")
        else:
            out.append(str(r["holds"]))
    return pd.Series(out, index=table.index)


def claims_markdown(table: pd.DataFrame, roles: Mapping[str, str] | None = None, other: pd.DataFrame | None = None,
                    other_label: str = "") -> str:
    """claims.md: how the claims are checked, a count, and one table row per claim; with ``other``
    (another experiment's claims.csv) each verdict says whether that experiment agrees (:func:`verdicts`)."""
    counts = table["holds"].value_counts()
    cells = verdicts(table, other, other_label)
    no_at_scale = int((cells == "no (scale)").sum())
    no_also = int(cells.str.startswith("no (also").sum())
    mapping = ""
    if roles:
        pairs = ", ".join(f"{display_name(m)} for {display_name(r)}" for m, r in roles.items() if m != r)
        if pairs:
            mapping = f"\nOur models stand in for the paper's: {pairs}; the paper's numbers are those of the model stood for.\n"

    def cell(text: Any) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = [
        "# The paper's claims, checked",
        "",
        "Generated by `python -m icepick claims` from `results/summary/`; do not edit.",
        "Every quantitative claim of *ICE-Pick: Iterative Cost-Efficient Pruning for DNNs* (Hu, Gibson, Cano, 2023):",
        "the paper's number, ours, the tolerance applied and whether the claim holds here.",
        mapping,
        "How the tolerances are applied:",
        "",
        f"- Time saved (1 - ICE-Pick / baseline, wall clock of the prune loop without the freeze trace, means over seeds):"
        f" within {TOL_SAVED_POINTS:g} percentage points of the paper's value; the headline 'up to' holds when our best is at least"
        f" the paper's minus {TOL_SAVED_POINTS:g} points. Savings by training MACs are in `table_time_savings.tex`.",
        f"- Accuracies: within {TOL_ACC_POINTS:g} point. Fine-tunings: the mean per run within {TOL_FT_RELATIVE:.0%} of the paper's"
        f" (its total over 10 runs / 10).",
        f"- 'Significantly fewer fine-tunings': at least {TOL_FEWER_FT:.0%} fewer. 'Maintaining accuracy': at most"
        f" {TOL_MAINTAIN_POINTS:g} points below the comparison. 'Comparable': within {TOL_COMPARABLE_POINTS:g} points.",
        f"- 'Gives lower time' (freezing ratio, threshold): mean time non-increasing along the parameter, with up to"
        f" {TOL_TIME_RELATIVE:.0%} noise per step, and lower at the end than at the start.",
        f"- Section 4.1: 'earlier layers shift less' holds when Spearman(layer index, mean shift) >= {TOL_EARLY_RHO:g};"
        f" 'the ordering is maintained' when the mean Spearman correlation between step 1's shifts and every later step's"
        f" is >= {TOL_ORDER_RHO:g} (the freezing decision is taken at step 1).",
        "- Ablation (`ablation-*`, an experiment the paper does not run): each statement about one part of ICE-Pick is"
        " tested by removing that part alone, at the ablation group's setting: the threshold (time at least"
        f" {TOL_TIME_RELATIVE:.0%} lower with it,"
        f" accuracy at most {TOL_MAINTAIN_POINTS:g} points lower), freezing (training MACs per fine-tuned image strictly lower),"
        " Eq. 1 (as Table 1's claims), and the cited advantage of iterative over one-shot pruning (the baseline's accuracy"
        " strictly above the one-shot baseline's, which trains as many epochs).",
        "- 'n/a': our results lack what the claim needs (e.g. a model or group not run).",
        "- 'no (scale)': the claim's number depends on the scale of the experiment (the paper's models, CIFAR-10,"
        " 200-epoch pretraining, a GPU); a smaller run is not expected to reproduce it, only the claims about"
        " directions (more freezing saves more time, ...) are comparable across scales"
        + (f"; and no run {other_label} contradicts that (the claim is n/a there)." if other is not None else "."),
        *([f"- Read against the claims {other_label}: 'no (also {other_label})' fails there too, so scale does not"
           f" excuse it; 'no (holds {other_label})' holds there; 'yes (not {other_label})' fails there.", ""]
          if other is not None else [""]),
        f"Holds: {int(counts.get('yes', 0))} yes, {int(counts.get('no', 0))} no ({no_at_scale} of them numbers that"
        f" depend on scale" + (f", {no_also} failing {other_label} too" if other is not None else "")
        + f"), {int(counts.get('n/a', 0))} n/a of {len(table)} claims.",
        "",
        "| id | claim | source | paper | ours | tolerance | holds |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, r in table.iterrows():
        lines.append("| " + " | ".join([*(cell(r[c]) for c in ["id", "claim", "source", "paper", "ours", "tolerance"]),
                                        cell(cells[i])]) + " |")
    return "\n".join(lines) + "\n"


