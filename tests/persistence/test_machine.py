"""Random crash schedules against the embedded backends (Redis: tests/integration)."""

from __future__ import annotations

from pathlib import Path

from tests.persistence.backends import MemoryBackend, SqliteBackend
from tests.persistence.machine import run_machine


def test_memory_store_applies_every_fill_exactly_once_under_random_crashes():
    run_machine(MemoryBackend)


def test_sqlite_store_applies_every_fill_exactly_once_under_random_crashes(tmp_path: Path) -> None:
    run_machine(lambda: SqliteBackend(tmp_path), max_examples=50)
