"""SqliteStore specifics (the shared contract is in test_contract.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from messages import InvalidConfig, StoreUnavailable
from persistence import SqliteStore


def test_uses_wal_and_refuses_another_partition_count(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SqliteStore(path, partitions=4, synchronous="FULL"):
        pass
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()
    with pytest.raises(
        InvalidConfig,
        match=rf"^sqlite {path} holds layout 1 with 4 partitions; this store was opened with "
        r"layout 1 and 8 partitions$",
    ):
        SqliteStore(path, partitions=8)


def test_a_file_that_is_not_a_database_is_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(
        StoreUnavailable, match=rf"^sqlite {path}: open failed: file is not a database$"
    ):
        SqliteStore(path)


def test_a_closed_store_is_store_unavailable(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db", partitions=4)
    store.close()
    with pytest.raises(
        StoreUnavailable, match=r"length failed: Cannot operate on a closed database"
    ):
        store.length(0)


def test_two_handles_in_one_process_share_one_journal(tmp_path: Path) -> None:
    one = SqliteStore(tmp_path / "s.db", partitions=4)
    two = SqliteStore(tmp_path / "s.db", partitions=4)
    ids = one.append(0, [("t1", b"x")])
    assert two.append(0, [("t1", b"x"), ("t2", b"y")])[0] is None
    assert [e.entry_id for e in two.read(0, "c", 10)][:1] == ids
    assert one.pending_count(0, "c") == 2
