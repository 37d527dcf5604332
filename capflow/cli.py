"""``capflow`` command line: the main job (``run``, ``demo``), scenarios, and operator tools.

Each subcommand lives in its own module, which adds its parser with ``add_parser(sub)`` and
runs with ``main(args) -> exit code``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from capflow.tuning import GC_THRESHOLD, parse_gc_threshold, tune_gc

_DEFAULT_GC = ",".join(map(str, GC_THRESHOLD))

#: subcommand modules, in help order
COMMANDS = (
    "capflow.run",
    "capflow.scenario",
    "capflow.loadtest",
    "capflow.inspect",
    "capflow.drill",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every ``capflow`` subcommand."""
    parser = argparse.ArgumentParser(
        prog="capflow",
        description="Exact, crash-safe books for many trading-bot profiles.",
    )
    parser.add_argument(
        "--gc-threshold",
        type=parse_gc_threshold,
        default=GC_THRESHOLD,
        metavar="N[,N,N]",
        help=f"garbage collector thresholds for this process (default: {_DEFAULT_GC}; 'python':"
        " the interpreter's 700,10,10); see docs/performance.md",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``capflow`` console script."""
    args = build_parser().parse_args(argv)
    tune_gc(args.gc_threshold)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
