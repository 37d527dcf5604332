"""``capflow`` command line: the main job (``run``/``demo``) and operator tools."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _cmd_demo(args: argparse.Namespace) -> int:
    print("capflow: the accounting core is in place; the runtime demo is coming with the runtime.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every ``capflow`` subcommand."""
    parser = argparse.ArgumentParser(prog="capflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a ~30 s demo of the runtime on a simulated exchange")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``capflow`` console script."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
