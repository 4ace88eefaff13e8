"""Command ``cost``: the paper sweep's projected training and evaluation MACs, and GPU hours."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from icepick.config import ConfigError

__all__ = ["register"]

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``cost`` subcommand."""
    from icepick.cost import H100_EVAL_TMACS, H100_TRAIN_TMACS

    p = subparsers.add_parser(
        "cost", help="projected MACs and GPU hours of a workflow configuration's sweep",
        description="Counts the training and evaluation MACs of every part of the sweep a workflow "
                    "configuration describes (pretraining, freeze traces, weight shift, each experiment group) "
                    "and converts them to GPU hours at the given throughputs. The baseline is exact; ICE-Pick "
                    "is given as an upper bound and at the paper's reported fine-tuning counts.",
    )
    p.add_argument("--configfile", type=Path, default=Path("config/config.yaml"), help="workflow configuration YAML")
    p.add_argument("--train-tmacs", type=float, default=H100_TRAIN_TMACS,
                   help=f"effective training throughput, tera-MACs/s (default {H100_TRAIN_TMACS:g}: one H100, "
                        "see docs/performance.md)")
    p.add_argument("--eval-tmacs", type=float, default=H100_EVAL_TMACS,
                   help=f"effective evaluation throughput, tera-MACs/s (default {H100_EVAL_TMACS:g})")
    p.add_argument("--freezing", default="worst", help="ICE-Pick's frozen layers in the upper bound: worst "
                   "(the cheapest layers, never a prefix) or prefix (the first layers, Section 4.1)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    p.set_defaults(func=_cost)


def _cost(args: argparse.Namespace) -> int:
    import yaml

    from icepick.cost import format_costs, sweep_costs

    if not args.train_tmacs > 0 or not args.eval_tmacs > 0:
        raise ConfigError("--train-tmacs and --eval-tmacs must be positive numbers (tera-MACs per second)")
    if not args.configfile.is_file():
        raise FileNotFoundError(f"{args.configfile}: no such configuration file")
    config = yaml.safe_load(args.configfile.read_text())
    if not isinstance(config, dict):
        raise ConfigError(f"{args.configfile}: not a workflow configuration (a YAML mapping)")
    costs = sweep_costs(config, args.freezing)
    print(f"Sweep of {args.configfile}:\n")
    print(format_costs(costs, args.train_tmacs, args.eval_tmacs))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**costs, "configfile": str(args.configfile),
                                         "train_tmacs": args.train_tmacs, "eval_tmacs": args.eval_tmacs},
                                        indent=2) + "\n")
    return 0
