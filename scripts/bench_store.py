#!/usr/bin/env python3
"""Throughput of the journal stores: ingest, read, and fenced commits. Prints figures only.

    .venv/bin/python scripts/bench_store.py                 # Redis (AOF everysec), SQLite, memory
    .venv/bin/python scripts/bench_store.py --backend redis --fsync always

Redis runs on a server this script starts (``RedisServer``, loopback, AOF on) and stops.
Commits write ``k`` snapshots of ~500 B state (k = 1, 10, 100) and ack ``k`` entries each; the
figures include building the envelopes (msgpack + BLAKE2b) in Python, as the runtime will.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from messages import StateValue, encode_state
from persistence import (
    JournalStore,
    MemoryJournalStore,
    RedisServer,
    RedisStore,
    SqliteStore,
    encode_snapshot,
)

PARTITION = 0
PARTITIONS = 16


def state_of(i: int) -> dict[str, StateValue]:
    """About 500 bytes of realistic book state."""
    orders: list[StateValue] = [
        {
            "id": f"cf-bot{i}-{n:06d}",
            "side": "buy" if n % 2 else "sell",
            "price": Decimal("64123.45") + n,
            "qty": 1_250_000 + n,
            "reserved": 80_154_312 + n,
        }
        for n in range(6)
    ]
    return {
        "allocated": 1_000_000_00,
        "reserved_orders": 320_617_248,
        "reserved_positions": 0,
        "realized_pnl": -12_345,
        "orders": orders,
        "halted": False,
    }


def profiles(store: JournalStore, n: int) -> list[str]:
    out: list[str] = []
    i = 0
    while len(out) < n:
        pid = f"bot-{i}"
        if store.partition_of(pid) == PARTITION:
            out.append(pid)
        i += 1
    return out


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:>10,.0f}/s"


def bench(store: JournalStore, label: str, scale: int) -> None:
    print(f"\n== {label}")
    state = state_of(0)
    start = time.perf_counter()
    for _ in range(scale):
        envelope = encode_snapshot("bot-0", state, "1700000000000-0", 1)
    took = time.perf_counter() - start
    print(f"   state {len(encode_state(state))} B, envelope {len(envelope)} B")
    print(f"   envelope build (Python only): {rate(scale, took)}")

    # ingest: batches of 1 and 100 entries, each with a dedupe key
    payload = b"x" * 200
    for batch in (1, 100):
        n = scale if batch == 1 else scale * 10
        items = [(f"ing{batch}-{i}", payload) for i in range(n)]
        start = time.perf_counter()
        for i in range(0, n, batch):
            store.append(PARTITION, items[i : i + batch])
        took = time.perf_counter() - start
        print(
            f"   ingest, {batch:>3} entries/append: {rate(n, took)} entries ({n} in {took:.2f} s)"
        )
    dup = [(f"ing100-{i}", payload) for i in range(100)]
    start = time.perf_counter()
    for _ in range(scale // 100):
        store.append(PARTITION, dup)
    took = time.perf_counter() - start
    print(f"   ingest, 100 re-sends/append:  {rate(scale, took)} entries (all skipped)")

    # read everything through the group (the commits below ack it)
    start = time.perf_counter()
    entries = []
    while batch_read := store.read(PARTITION, "bench", 1000):
        entries.extend(batch_read)
    took = time.perf_counter() - start
    print(f"   read (count 1000):           {rate(len(entries), took)} entries")

    fence = store.acquire_lease(PARTITION, "bench", 600_000)
    pids = profiles(store, 100)
    states = [state_of(i) for i in range(100)]
    next_entry = 0
    for k in (1, 10, 100):
        commits = max(50, scale // k)
        if next_entry + commits * k > len(entries):
            extra = [(None, payload)] * (commits * k)
            for i in range(0, len(extra), 1000):
                store.append(PARTITION, extra[i : i + 1000])
            while batch_read := store.read(PARTITION, "bench", 1000):
                entries.extend(batch_read)
        start = time.perf_counter()
        for _ in range(commits):
            chunk = entries[next_entry : next_entry + k]
            next_entry += k
            offset = chunk[-1].entry_id
            store.commit(
                fence,
                {pids[j]: (states[j], offset) for j in range(k)},
                [e.entry_id for e in chunk],
            )
        took = time.perf_counter() - start
        print(
            f"   commit, {k:>3} snapshots + {k:>3} acks: {rate(commits, took)} commits"
            f" = {rate(commits * k, took)} snapshots"
        )
    start = time.perf_counter()
    loaded = store.load_many(pids)
    took = time.perf_counter() - start
    assert len(loaded) == 100
    print(f"   load_many (100 profiles):    {took * 1000:>10.2f} ms")


@contextmanager
def redis_store(fsync: str) -> Iterator[JournalStore]:
    with RedisServer(appendonly=True, appendfsync=fsync) as server:  # type: ignore[arg-type]
        store = RedisStore(server.url, partitions=PARTITIONS)
        try:
            yield store
        finally:
            store.close()


@contextmanager
def sqlite_store(synchronous: str) -> Iterator[JournalStore]:
    with (
        tempfile.TemporaryDirectory(prefix="capflow-bench-") as tmp,
        SqliteStore(
            Path(tmp) / "bench.db",
            partitions=PARTITIONS,
            synchronous=synchronous,  # type: ignore[arg-type]
        ) as store,
    ):
        yield store


@contextmanager
def memory_store() -> Iterator[JournalStore]:
    yield MemoryJournalStore(partitions=PARTITIONS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["redis", "sqlite", "memory", "all"], default="all")
    parser.add_argument("--fsync", choices=["everysec", "always", "no"], default="everysec")
    parser.add_argument("--sqlite-sync", choices=["NORMAL", "FULL"], default="NORMAL")
    parser.add_argument("--scale", type=int, default=5000, help="operations per measurement")
    args = parser.parse_args()
    runs: list[tuple[str, Callable[[], AbstractContextManager[JournalStore]]]] = []
    if args.backend in ("redis", "all"):
        runs.append((f"redis (AOF appendfsync {args.fsync})", lambda: redis_store(args.fsync)))
    if args.backend in ("sqlite", "all"):
        runs.append(
            (
                f"sqlite (WAL, synchronous={args.sqlite_sync})",
                lambda: sqlite_store(args.sqlite_sync),
            )
        )
    if args.backend in ("memory", "all"):
        runs.append(("memory", memory_store))
    print(f"python {sys.version.split()[0]}, scale {args.scale}")
    for label, open_store in runs:
        with open_store() as store:
            bench(store, label, args.scale)


if __name__ == "__main__":
    main()
