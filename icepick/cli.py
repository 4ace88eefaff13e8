"""Command line: ``python -m icepick <command> ...`` (one subcommand per pipeline step).

Every command validates its arguments up front: a bad value fails with one line that names
the setting and what is allowed, and exit code 2, never a traceback from inside a library.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from icepick import __version__
from icepick.config import ConfigError

__all__ = ["main", "build_parser"]

# Modules that add subcommands, in the order of the pipeline; each has register(subparsers).
COMMAND_MODULES = (
    "icepick.commands.data",
    "icepick.commands.pretrain",
    "icepick.commands.prune",
    "icepick.commands.report",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="icepick",
        description="ICE-Pick (Iterative Cost-Efficient Pruning): pretrain, trace, prune and report.",
    )
    parser.add_argument("--version", action="version", version=f"icepick {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ConfigError, FileNotFoundError, FloatingPointError) as err:
        print(f"icepick {args.command}: error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # our own checks raise ValueError with a message for the user
        print(f"icepick {args.command}: error: {err}", file=sys.stderr)
        return 2
