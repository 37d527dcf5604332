"""``capflow scenario``: placeholder until its module lands."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    parser: argparse.ArgumentParser = sub.add_parser("scenario", help="(in progress)")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Run the subcommand."""
    print("capflow scenario: in progress")
    return 0
