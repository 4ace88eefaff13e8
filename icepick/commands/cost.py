"""Command ``cost``: the paper sweep's projected training and evaluation MACs, and GPU hours."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from icepick.config import ConfigError
from icepick.records import write_json

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
    p.add_argument("--configfile", type=Path, nargs="+", action="extend", default=None,
                   help="workflow configuration YAML, as snakemake --configfile takes it: laid over "
                        "config/config.yaml (a file of only the keys it changes is enough; several: later ones win, "
                        "mappings merged), every key still missing at the schema's default")
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
    from icepick.cost import format_costs, sweep_costs, workflow_config

    if not args.train_tmacs > 0 or not args.eval_tmacs > 0:
        raise ConfigError("--train-tmacs and --eval-tmacs must be positive numbers (tera-MACs per second)")
    files = list(args.configfile or [])
    config = workflow_config(files)
    costs = sweep_costs(config, args.freezing)
    names = " + ".join(str(f) for f in files) or "config/config.yaml"
    print(f"Sweep of {names}:\n")
    print(format_costs(costs, args.train_tmacs, args.eval_tmacs))
    if args.json is not None:
        write_json(args.json, {**costs, "configfile": [str(f) for f in files], "train_tmacs": args.train_tmacs,
                               "eval_tmacs": args.eval_tmacs})
    return 0
