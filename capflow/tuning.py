"""Process-wide settings the ``capflow`` commands choose for their own process.

An embedding application owns its process and chooses for itself; docs/performance.md gives
the figures. Python's default collector thresholds (700, 10, 10) run a full collection often
while 10,000 profiles' books are built, and each one walks every object: with
``(50_000, 50, 100)`` recovery of 10,000 profiles from Redis took 1.4 s instead of 2.8 s and the
in-memory rate rose ~8 % (same machine, same run otherwise). Reference cycles are still
collected, only in larger batches.
"""

from __future__ import annotations

import argparse
import gc

#: the ``capflow`` commands' collector thresholds (generation 0, 1, 2)
GC_THRESHOLD = (50_000, 50, 100)


def parse_gc_threshold(text: str) -> tuple[int, ...]:
    """``"python"`` (the interpreter's default, 700,10,10) or one to three whole numbers."""
    if text == "python":
        return (700, 10, 10)
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'python' or up to three whole numbers like 50000,50,100, got {text!r}"
        ) from None
    if not 1 <= len(values) <= 3 or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected 'python' or up to three whole numbers >= 0, got {text!r}"
        )
    return values


def tune_gc(threshold: tuple[int, ...] = GC_THRESHOLD) -> tuple[int, ...]:
    """Set the collector's thresholds; returns the previous ones."""
    previous = gc.get_threshold()
    gc.set_threshold(*threshold)
    return previous
