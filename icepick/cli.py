"""Command line: ``python -m icepick <command> ...`` (one subcommand per pipeline step).

Every command validates its arguments up front: a bad value fails with one line that names
the setting and what is allowed, and exit code 2, never a traceback from inside a library.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from icepick import __version__

__all__ = ["main", "build_parser"]

# Which module registers each subcommand, in the order of the pipeline (a test holds this
# equal to what they register), so that a command imports only its own module: the report
# commands never import torch. Each module has register(subparsers).
COMMANDS = {
    "data": "icepick.commands.data",
    "pretrain": "icepick.commands.pretrain",
    "trace": "icepick.commands.prune",
    "run": "icepick.commands.prune",
    "weight-shift": "icepick.commands.prune",
    "blocks": "icepick.commands.prune",
    "compare": "icepick.commands.compare",
    "tune": "icepick.commands.tune",
    "aggregate": "icepick.commands.report",
    "table": "icepick.commands.report",
    "figure": "icepick.commands.report",
    "claims": "icepick.commands.report",
    "cost": "icepick.commands.cost",
}
COMMAND_MODULES = tuple(dict.fromkeys(COMMANDS.values()))


def _command_name(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names (its first word that is not an option), or None."""
    return next((token for token in argv if not token.startswith("-")), None)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The top-level parser: with the subcommand ``argv`` names only, else with every subcommand.

    Each command module imports what its commands need (torch for training, pandas for the
    reports); registering only the named command's module keeps the others' imports out
    of the process (``import torch`` alone is about three seconds of CPU).
    """
    parser = argparse.ArgumentParser(
        prog="icepick",
        description="ICE-Pick (Iterative Cost-Efficient Pruning): pretrain, trace, prune and report.",
    )
    parser.add_argument("--version", action="version", version=f"icepick {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    command = _command_name(argv or [])
    modules = [COMMANDS[command]] if command in COMMANDS else COMMAND_MODULES
    for name in modules:
        importlib.import_module(name).register(subparsers)
    _show_defaults(parser)
    return parser


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows '(default: X)' for options that have a default (not for required ones or None)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or action.default is None or action.default is False or action.default in (argparse.SUPPRESS, []):
            return action.help
        return super()._get_help_string(action)


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Every (sub)command's --help shows each option's default."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.formatter_class = _DefaultsFormatter
                _show_defaults(sub)


def _subparser(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser of the (sub)command named in ``argv`` (the top level when there is none)."""
    current = parser
    for token in argv:
        actions = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions or token not in actions[0].choices:
            if token.startswith("-"):
                continue
            break
        current = actions[0].choices[token]
    return current


def _unrecognized(parser: argparse.ArgumentParser, argv: Sequence[str], extras: list[str]) -> str:
    """'unrecognized arguments: ...', with the closest known option for a misspelt one."""
    sub = _subparser(parser, argv)
    known = [opt for action in sub._actions for opt in action.option_strings if opt.startswith("--")]
    hints = []
    for extra in extras:
        if extra.startswith("--"):
            close = difflib.get_close_matches(extra.split("=", 1)[0], known, n=1, cutoff=0.6)
            if close:
                hints.append(f"{extra.split('=', 1)[0]} -> {close[0]}")
    hint = f" (did you mean: {', '.join(hints)}?)" if hints else ""
    return f"unrecognized arguments: {' '.join(extras)}{hint}; see `{sub.prog} --help`"


def _one_line(err: BaseException) -> str:
    """The error's message on one line (library messages sometimes span several)."""
    return " ".join(str(err).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args, extras = parser.parse_known_args(argv)
    if extras:
        command = f"icepick {args.command}" if getattr(args, "command", None) else "icepick"
        print(f"{command}: error: {_unrecognized(parser, argv, extras)}", file=sys.stderr)
        return 2
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
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    # Our own checks raise ValueError (ConfigError, DataIntegrityError) with a message for the
    # user; OSError covers missing files, folders that cannot be written and no free GPU slot.
    except (ValueError, OSError, FloatingPointError) as err:
        print(f"icepick {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
