"""The batched store calls on the embedded backends (Redis: tests/integration)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.persistence.backends import Backend, MemoryBackend, SqliteBackend
from tests.persistence.batched import BatchedContract


class TestMemoryBatched(BatchedContract):
    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        backend = MemoryBackend()
        yield backend
        backend.close()


class TestSqliteBatched(BatchedContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[Backend]:
        backend = SqliteBackend(tmp_path)
        yield backend
        backend.close()
