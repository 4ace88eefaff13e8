"""Command ``compare``: ICE-Pick and the iterative baseline on the same model and data, side by side.

Argument handling only: the runs are :func:`icepick.api.run_comparison`'s (each through
:func:`icepick.algorithm.run_experiment`), the table, savings and figure
:mod:`icepick.reporting.compare`'s.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any

from icepick.algorithm import RunConfig
from icepick.commands.common import add_device_args, setup_device
from icepick.commands.prune import (
    _add_data_args,
    _add_finetune_args,
    _check_pretrained,
    _finetune_config,
    _halt_value,
    _normalization,
)
from icepick.criteria import CRITERIA

__all__ = ["register"]

log = logging.getLogger(__name__)

#: Where --pretrained is written as an icepick model file when it holds your own weights.
CONVERTED = "pretrained.converted.pt"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``compare`` subcommand."""
    d = RunConfig()
    p = subparsers.add_parser(
        "compare", help="ICE-Pick and the iterative baseline on the same model and data: what ICE-Pick saves",
        description="Runs ICE-Pick (with the freeze trace first when --eta > 0) and the iterative baseline (a full "
                    "fine-tuning after every step at the fixed rate, nothing frozen) on the same pretrained model "
                    "and data, and prints and writes the final accuracy of each and of the unpruned model, the "
                    "fine-tunings, the training MACs and the wall time of each, what ICE-Pick saves, and a figure "
                    "of accuracy against training MACs. A killed comparison resumes when run again.",
    )
    _add_data_args(p)
    _add_finetune_args(p)
    p.add_argument("--theta", type=float, default=d.theta, help="ICE-Pick's accuracy-drop threshold, points")
    p.add_argument("--eta", type=float, default=d.eta, help="fraction of conv layers ICE-Pick freezes (> 0: a "
                   "freeze trace is made first and counted on ICE-Pick's side)")
    p.add_argument("--lr-policy", default=d.lr_policy, help="ICE-Pick's rate: icepick (Eq. 1) or fixed (the baseline "
                   "always runs at the fixed rate)")
    p.add_argument("--base", type=float, default=d.base, help="Eq. 1 base / the fixed learning rate")
    p.add_argument("--delta", type=float, default=d.delta, help="Eq. 1 Delta")
    p.add_argument("--p", type=float, default=d.p, help="Eq. 1 p")
    p.add_argument("--beta", type=float, default=d.beta, help="Eq. 1 beta")
    p.add_argument("--lr-shape", default=d.finetune.lr_shape, help="ICE-Pick's rate within a fine-tuning: constant "
                   "or one_cycle (the baseline's is constant)")
    p.add_argument("--early-halt", type=_halt_value, default=d.finetune.early_halt,
                   help="ICE-Pick's early halt: a fraction in (0, 1) of a fine-tuning's batches, a whole number of "
                        "batches, or 0 for full epochs; the baseline never halts")
    p.add_argument("--freeze-bn-stats", action="store_true", help="keep frozen layers' BN statistics fixed")
    p.add_argument("--freeze-layers", default=d.freeze_layers, help="layers ranked for freezing: blocks or all")
    p.add_argument("--max-steps", type=int, default=d.max_steps, help="prune only the first N blocks (0 = all)")
    p.add_argument("--criterion", default=d.criterion, help=f"how filters are ranked: {', '.join(CRITERIA)}")
    p.add_argument("--criterion-batches", type=int, default=d.criterion_batches,
                   help="training batches that taylor and mean_activation read at each step")
    p.add_argument("--coupled", action="store_true", help="also prune the groups that feed a residual addition")
    p.add_argument("--no-eval-cache", action="store_true", help="evaluate the whole model every time")
    p.add_argument("--out", required=True, type=Path,
                   help="folder of the comparison: icepick/ and baseline/ (each run's steps.csv, summary.json, "
                        "pruned.pt), trace.json, comparison.csv, comparison.json, comparison.png and .pdf")
    p.add_argument("--tuned", type=Path, default=None,
                   help="a best.json of icepick tune: also run ICE-Pick with its setting (into OUT/tuned/) and show it as "
                        "a third row, its search's MACs and time added")
    p.add_argument("--force", action="store_true", help="run again into a folder that holds a comparison, writing "
                   "over its files")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_device_args(p)
    p.set_defaults(func=_compare)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """ICE-Pick's run settings from the options (the baseline's follow from them)."""
    ft = _finetune_config(args, lr_shape=args.lr_shape, early_halt=args.early_halt)
    return {
        "lr_policy": args.lr_policy, "theta": args.theta, "eta": args.eta, "ratio": args.ratio, "seed": args.seed,
        "base": args.base, "delta": args.delta, "p": args.p, "beta": args.beta,
        "decision_split": args.decision_split, "val_size": args.val_size, "freeze_bn_stats": args.freeze_bn_stats,
        "freeze_layers": args.freeze_layers, "max_steps": args.max_steps, "eval_cache": not args.no_eval_cache,
        "criterion": args.criterion, "criterion_batches": args.criterion_batches, "coupled": args.coupled,
        **dataclasses.asdict(ft),
    }


def _compare(args: argparse.Namespace) -> int:
    import torch

    from icepick.api import (
        check_comparison_dir,
        comparison_configs,
        keep_model_file,
        prepare_comparison_dir,
        run_comparison,
    )
    from icepick.data import load_experiment_data

    icepick_cfg, baseline_cfg = comparison_configs(_settings(args))
    tuned = None
    if args.tuned is not None:
        from icepick.tuning import read_best

        tuned = read_best(args.tuned)
    check_comparison_dir(args.out, args.force)  # before anything is written there
    staged = args.out / f".{CONVERTED}.new"
    model = _check_pretrained(args, staged)
    if Path(args.pretrained) == staged:  # your own weights: the same file as last time, so that the runs resume
        args.pretrained = keep_model_file(staged, args.out / CONVERTED)
    out = prepare_comparison_dir(args.out, args.force)
    device = setup_device(args)
    torch.manual_seed(icepick_cfg.seed)
    data = load_experiment_data(args.data, device, icepick_cfg.decision_split, icepick_cfg.val_size,
                                icepick_cfg.val_seed, _normalization(args.normalize, model),
                                data_memory=args.data_memory)
    comparison = run_comparison(icepick_cfg, baseline_cfg, args.pretrained, data, out, device,
                                show_progress=not args.no_progress, tuned=tuned)
    print(comparison)
    print(f"Written to {out}/: comparison.csv, comparison.json, comparison.png, comparison.pdf; each run's records "
          "in icepick/ and baseline/" + ("; the freeze trace in trace.json" if icepick_cfg.eta > 0 else "")
          + ("; the tuned run in tuned/" if tuned is not None else ""))
    return 0
