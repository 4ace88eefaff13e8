"""Commands ``aggregate``, ``table``, ``figure`` and ``claims``: from run records to the paper's
tables, figures and claims.md. Every input and output is an explicit file argument.

    python -m icepick aggregate runs --group G --summaries S... --steps T... --runs-out R --steps-out T
    python -m icepick aggregate merge --runs R... --steps T... --runs-out R --steps-out T
    python -m icepick aggregate pretrain --summaries P... --out CSV
    python -m icepick aggregate weight-shift --inputs W... --out CSV
    python -m icepick table table1 --runs R --out TEX --csv-out CSV [--models M... --paper-role M=P]
    python -m icepick table time-savings --runs R --out TEX --csv-out CSV [--models ... --paper-role ...]
    python -m icepick table ablation --runs R --out TEX --csv-out CSV [--models ... --paper-role ...]
    python -m icepick table criteria --runs R --out TEX --csv-out CSV [--models ... --paper-role ...]
    python -m icepick figure weight-shift --weight-shift CSV --out PDF [--png PNG --models ...]
    python -m icepick figure accuracy --runs R --steps T --out PDF [--png PNG --models ... --paper-role ...]
    python -m icepick figure thresholds --runs R --out PDF [--png PNG --models ...]
    python -m icepick figure lr-schedule --out PDF [--png PNG --base --delta --p --beta]
    python -m icepick figure ablation --runs R --out PDF [--png PNG --models ... --paper-role ...]
    python -m icepick figure criteria --runs R --out PDF [--png PNG --models ... --paper-role ...]
    python -m icepick claims --runs R --weight-shift CSV --pretrain CSV --out MD [--csv-out CSV ...]
    python -m icepick claims --table CLAIMS_CSV --compare OTHER_CSV --compare-label L --out MD
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from icepick import reporting, schedule

__all__ = ["register"]

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the aggregate, table, figure and claims subcommands."""
    _register_aggregate(subparsers)
    _register_table(subparsers)
    _register_figure(subparsers)
    _register_claims(subparsers)


# ---------------------------------------------------------------- shared arguments


def _role(text: str) -> tuple[str, str]:
    model, sep, role = text.partition("=")
    if not sep or not model or role not in reporting.PAPER_MODELS:
        raise argparse.ArgumentTypeError(
            f"--paper-role takes OURS=PAPER with PAPER one of {', '.join(reporting.PAPER_MODELS)}, not {text!r}")
    return model, role


def _add_naming(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", default=None, help="models in display order (default: as found)")
    p.add_argument("--paper-role", type=_role, action="append", default=[], metavar="OURS=PAPER",
                   help="compare our model OURS with the paper's PAPER (e.g. resnet20=resnet110); repeatable")


def _roles(args: argparse.Namespace) -> dict[str, str]:
    return dict(args.paper_role or [])


def _read_csv(path: Path, **options: Any) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **options)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: empty file; rerun the step that writes it") from None


def _read_claims(path: Path) -> pd.DataFrame:
    """A claims.csv as written: its 'n/a' cells stay text (pandas would read them as missing)."""
    return _read_csv(path, keep_default_na=False, dtype=str)


# ---------------------------------------------------------------- aggregate


def _register_aggregate(subparsers: argparse._SubParsersAction) -> None:
    agg = subparsers.add_parser("aggregate", help="collect run records into tables under results/summary/")
    sub = agg.add_subparsers(dest="what", metavar="WHAT", required=True)

    p = sub.add_parser("runs", help="run summaries and steps -> runs.csv and steps.csv (one group)")
    p.add_argument("--summaries", nargs="+", type=Path, required=True, help="every run's summary.json")
    p.add_argument("--steps", nargs="+", type=Path, required=True, help="the matching steps.csv, same order")
    p.add_argument("--group", default=None, help="experiment group written in the group column")
    p.add_argument("--runs-out", type=Path, required=True)
    p.add_argument("--steps-out", type=Path, required=True)
    p.set_defaults(func=_aggregate_runs)

    p = sub.add_parser("merge", help="per-group aggregates -> one runs.csv and steps.csv, each run once")
    p.add_argument("--runs", nargs="+", type=Path, required=True)
    p.add_argument("--steps", nargs="+", type=Path, required=True)
    p.add_argument("--runs-out", type=Path, required=True)
    p.add_argument("--steps-out", type=Path, required=True)
    p.set_defaults(func=_aggregate_merge)

    p = sub.add_parser("pretrain", help="pretrain.json files -> pretrain.csv")
    p.add_argument("--summaries", nargs="+", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_aggregate_pretrain)

    p = sub.add_parser("weight-shift", help="weight_shift.csv files -> one table")
    p.add_argument("--inputs", nargs="+", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_aggregate_weight_shift)


def _aggregate_runs(args: argparse.Namespace) -> int:
    runs, steps = reporting.aggregate_runs(args.summaries, args.steps, group=args.group)
    reporting.write_table(args.runs_out, runs)
    reporting.write_table(args.steps_out, steps)
    log.info("aggregated %d runs (%d steps) into %s", len(runs), len(steps), args.runs_out)
    return 0


def _aggregate_merge(args: argparse.Namespace) -> int:
    runs, steps = reporting.merge_aggregates([_read_csv(p) for p in args.runs], [_read_csv(p) for p in args.steps])
    reporting.write_table(args.runs_out, runs)
    reporting.write_table(args.steps_out, steps)
    log.info("merged into %d runs (%d steps): %s", len(runs), len(steps), args.runs_out)
    return 0


def _aggregate_pretrain(args: argparse.Namespace) -> int:
    reporting.write_table(args.out, reporting.aggregate_pretrain(args.summaries))
    return 0


def _aggregate_weight_shift(args: argparse.Namespace) -> int:
    reporting.write_table(args.out, reporting.aggregate_weight_shift(args.inputs))
    return 0


# ---------------------------------------------------------------- tables


def _register_table(subparsers: argparse._SubParsersAction) -> None:
    tab = subparsers.add_parser("table", help="the paper's tables as LaTeX (booktabs) and CSV")
    sub = tab.add_subparsers(dest="what", metavar="WHAT", required=True)
    for name, func, help_ in (
        ("table1", _table1, "Table 1: fixed vs ICE-Pick lr (from the table1 group's runs.csv)"),
        ("time-savings", _time_savings, "time saved vs the baseline (from the fig3 group's runs.csv)"),
        ("ablation", _ablation, "ICE-Pick against its ablation arms (from the ablation group's runs.csv)"),
        ("criteria", _criteria, "ICE-Pick and the baseline per pruning criterion (from the criteria group's runs.csv)"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--runs", type=Path, required=True, help="runs.csv")
        p.add_argument("--out", type=Path, required=True, help="LaTeX tabular (.tex)")
        p.add_argument("--csv-out", type=Path, default=None, help="the same numbers as CSV")
        _add_naming(p)
        p.set_defaults(func=func)


def _write_table(args: argparse.Namespace, compute, latex) -> int:
    """A table from runs.csv: ``compute(runs, roles, models)`` written as LaTeX (and CSV)."""
    table = compute(_read_csv(args.runs), _roles(args), args.models)
    reporting.write_text(args.out, latex(table))
    if args.csv_out:
        reporting.write_table(args.csv_out, table)
    return 0


def _table1(args: argparse.Namespace) -> int:
    return _write_table(args, reporting.table1, reporting.table1_latex)


def _time_savings(args: argparse.Namespace) -> int:
    return _write_table(args, reporting.time_savings, reporting.time_savings_latex)


def _ablation(args: argparse.Namespace) -> int:
    return _write_table(args, reporting.ablation_table, reporting.ablation_latex)


def _criteria(args: argparse.Namespace) -> int:
    return _write_table(args, reporting.criteria_table, reporting.criteria_latex)


# ---------------------------------------------------------------- figures


def _register_figure(subparsers: argparse._SubParsersAction) -> None:
    fig = subparsers.add_parser("figure", help="the paper's figures (PDF, optionally PNG)")
    sub = fig.add_subparsers(dest="what", metavar="WHAT", required=True)

    p = sub.add_parser("weight-shift", help="Figure 2: weight shift per layer and step")
    p.add_argument("--weight-shift", type=Path, required=True, help="weight_shift.csv (all models)")
    _add_figure_out(p)
    _add_naming(p)
    p.set_defaults(func=_fig_weight_shift)

    p = sub.add_parser("accuracy", help="Figure 3: accuracy along the pruning steps")
    p.add_argument("--runs", type=Path, required=True, help="runs.csv of the fig3 group")
    p.add_argument("--steps", type=Path, required=True, help="steps.csv of the fig3 group")
    _add_figure_out(p)
    _add_naming(p)
    p.set_defaults(func=_fig_accuracy)

    p = sub.add_parser("thresholds", help="final accuracy and time against theta")
    p.add_argument("--runs", type=Path, required=True, help="runs.csv of the thresholds group")
    _add_figure_out(p)
    _add_naming(p)
    p.set_defaults(func=_fig_thresholds)

    for name, func, help_ in (
        ("ablation", _fig_ablation, "the ablation: final accuracy against training MACs and time"),
        ("criteria", _fig_criteria, "accuracy, fine-tunings, MACs and time per pruning criterion"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--runs", type=Path, required=True, help=f"runs.csv of the {name} group")
        _add_figure_out(p)
        _add_naming(p)
        p.set_defaults(func=func)

    p = sub.add_parser("lr-schedule", help="Eq. 1: max learning rate against alpha")
    p.add_argument("--base", type=float, default=schedule.BASE, help="Eq. 1 base")
    p.add_argument("--delta", type=float, default=schedule.DELTA, help="Eq. 1 Delta")
    p.add_argument("--p", type=float, default=schedule.P, help="Eq. 1 p")
    p.add_argument("--beta", type=float, default=schedule.BETA, help="Eq. 1 beta")
    _add_figure_out(p)
    p.set_defaults(func=_fig_lr_schedule)


def _add_figure_out(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="figure file (.pdf)")
    p.add_argument("--png", type=Path, default=None, help="also write a PNG here")


def _fig_weight_shift(args: argparse.Namespace) -> int:
    reporting.plot_weight_shift(_read_csv(args.weight_shift), args.out, args.png, args.models)
    return 0


def _fig_accuracy(args: argparse.Namespace) -> int:
    reporting.plot_accuracy(_read_csv(args.runs), _read_csv(args.steps), args.out, args.png, args.models, _roles(args))
    return 0


def _fig_thresholds(args: argparse.Namespace) -> int:
    reporting.plot_thresholds(_read_csv(args.runs), args.out, args.png, args.models)
    return 0


def _fig_ablation(args: argparse.Namespace) -> int:
    reporting.plot_ablation(_read_csv(args.runs), args.out, args.png, args.models, _roles(args))
    return 0


def _fig_criteria(args: argparse.Namespace) -> int:
    reporting.plot_criteria(_read_csv(args.runs), args.out, args.png, args.models, _roles(args))
    return 0


def _fig_lr_schedule(args: argparse.Namespace) -> int:
    reporting.plot_lr_schedule(args.out, args.png, args.base, args.delta, args.p, args.beta)
    return 0


# ---------------------------------------------------------------- claims


def _register_claims(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("claims", help="claims.md: every quantitative claim of the paper, checked")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--runs", type=Path, help="results/summary/runs.csv (all groups)")
    source.add_argument("--table", type=Path,
                        help="a claims.csv already checked (instead of --runs): write its claims.md again, read "
                             "against --compare")
    p.add_argument("--weight-shift", type=Path, default=None, help="results/summary/weight_shift.csv")
    p.add_argument("--pretrain", type=Path, default=None, help="results/summary/pretrain.csv")
    p.add_argument("--out", type=Path, required=True, help="claims.md")
    p.add_argument("--csv-out", type=Path, default=None, help="the same table as CSV")
    p.add_argument("--compare", type=Path, default=None,
                   help="another experiment's claims.csv: each verdict says whether it agrees (a claim that fails "
                        "there too is not excused by scale)")
    p.add_argument("--compare-label", default="in the other experiment",
                   help="how claims.md names that experiment, e.g. 'on Fashion-MNIST, at CIFAR-10's size'")
    _add_naming(p)
    p.set_defaults(func=_claims)


def _claims(args: argparse.Namespace) -> int:
    shift = _read_csv(args.weight_shift) if args.weight_shift else None
    pretrain = _read_csv(args.pretrain) if args.pretrain else None
    if args.table is not None:
        table = _read_claims(args.table)
        missing = [c for c in reporting.CLAIM_COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(f"{args.table}: not a claims.csv (no column {', '.join(missing)}); "
                             f"give the file icepick claims --csv-out wrote")
    else:
        table = reporting.claims(_read_csv(args.runs), shift, pretrain, _roles(args), args.models)
    other = _read_claims(args.compare) if args.compare else None
    reporting.write_text(args.out, reporting.claims_markdown(table, _roles(args), other, args.compare_label))
    if args.csv_out:
        reporting.write_table(args.csv_out, table)
    counts = table["holds"].value_counts()
    log.info("%d claims: %d hold, %d do not, %d n/a", len(table), counts.get("yes", 0), counts.get("no", 0),
             counts.get("n/a", 0))
    return 0
