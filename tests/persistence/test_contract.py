"""The journal-store contract on the embedded backends (Redis: tests/integration)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.persistence.backends import Backend, MemoryBackend, SqliteBackend
from tests.persistence.contract import StoreContract


class TestMemoryContract(StoreContract):
    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        backend = MemoryBackend()
        yield backend
        backend.close()


class TestSqliteContract(StoreContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[Backend]:
        backend = SqliteBackend(tmp_path)
        yield backend
        backend.close()
