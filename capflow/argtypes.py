"""``argparse`` types shared by the ``capflow`` commands."""

from __future__ import annotations

import argparse


def count(text: str) -> int:
    """A whole number >= 0 (profiles, kills, threads, ...)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value}")
    return value
