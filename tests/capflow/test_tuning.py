"""The capflow commands' process settings: collector thresholds, parsed and applied."""

from __future__ import annotations

import argparse
import gc
from collections.abc import Iterator

import pytest

from capflow.cli import build_parser
from capflow.tuning import GC_THRESHOLD, parse_gc_threshold, tune_gc


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_thresholds_parse_as_python_or_up_to_three_whole_numbers() -> None:
    assert parse_gc_threshold("python") == (700, 10, 10)
    assert parse_gc_threshold("50000,50,100") == (50_000, 50, 100)
    assert parse_gc_threshold("1000") == (1000,)
    for bad in ("", "a,b", "1,2,3,4", "-1", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected 'python'"):
            parse_gc_threshold(bad)


def test_the_cli_tunes_its_process_unless_told_otherwise(restore_gc: None) -> None:
    parser = build_parser()
    assert parser.parse_args(["loadtest", "--micro"]).gc_threshold == GC_THRESHOLD
    args = parser.parse_args(["--gc-threshold", "python", "loadtest", "--micro"])
    assert args.gc_threshold == (700, 10, 10)

    gc.set_threshold(123, 4, 5)
    assert tune_gc(args.gc_threshold) == (123, 4, 5)
    assert gc.get_threshold() == (700, 10, 10)
    tune_gc()
    assert gc.get_threshold() == GC_THRESHOLD
