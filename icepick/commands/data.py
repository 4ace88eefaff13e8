"""Command ``data``: ``data synth`` writes the generated CIFAR-format set, ``data fetch`` the real one."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from icepick.commands.common import seed_int

__all__ = ["register"]

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data synth`` and ``data fetch``."""
    parser = subparsers.add_parser("data", help="put CIFAR-10 (real or generated) on disk")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    synth = sub.add_parser("synth", help="write a generated data set in the CIFAR-10 on-disk format (no download)")
    synth.add_argument("--out", required=True, type=Path, help="data folder; files go to OUT/cifar-10-batches-py/")
    synth.add_argument("--train", required=True, type=int, help="number of training images (>= 10)")
    synth.add_argument("--test", required=True, type=int, help="number of test images (>= 10)")
    synth.add_argument("--seed", type=seed_int, default=0, help="generator seed")
    synth.add_argument("--difficulty", default="standard", help="generator preset: standard or easy (smoke runs)")
    synth.set_defaults(func=_synth)

    fetch = sub.add_parser("fetch", help="download the real CIFAR-10 (or check files placed by hand)")
    fetch.add_argument("--root", required=True, type=Path, help="data folder; files go to ROOT/cifar-10-batches-py/")
    fetch.set_defaults(func=_fetch)


def _synth(args: argparse.Namespace) -> int:
    from icepick.data import synth_cifar10

    folder = synth_cifar10(args.out, n_train=args.train, n_test=args.test, seed=args.seed,
                           difficulty=args.difficulty)
    log.info("wrote a generated CIFAR-format data set (%d train, %d test, seed %d) to %s",
             args.train, args.test, args.seed, folder)
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from icepick.data import fetch_cifar10

    fetch_cifar10(args.root)
    log.info("CIFAR-10 is present and intact under %s", args.root)
    return 0
