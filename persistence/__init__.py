"""Durable state: profile snapshots and the fill journal, on Redis or embedded.

* ``Journal`` + ``FencedStore`` (``interfaces``): at-least-once delivery of ingested fills and
  a fenced, atomic ``commit`` of snapshots and acks; implemented by ``MemoryJournalStore``,
  ``SqliteStore`` and ``RedisStore``, which pass one contract suite.
* ``SnapshotStore``/``MemoryStore``/``Checkpoint`` (``store``): what the actors use today;
  ``FencedCheckpointStore`` puts those checkpoints in any ``JournalStore``.
* ``RedisServer``: a real redis-server for tests, drills and benchmarks.

Key layout and guarantees: ``docs/redis-layout.md``.
"""

from persistence.checkpoints import FencedCheckpointStore
from persistence.envelope import SNAPSHOT_SCHEMA, decode_snapshot, encode_snapshot
from persistence.interfaces import (
    CommitWrite,
    FencedStore,
    Journal,
    JournalItem,
    JournalStore,
    SnapshotWrite,
)
from persistence.layout import DEFAULT_PARTITIONS, DEFAULT_PREFIX, KeyLayout
from persistence.memory import MemoryJournalStore
from persistence.records import (
    ZERO_OFFSET,
    Fence,
    JournalEntry,
    Snapshot,
    format_offset,
    parse_offset,
)
from persistence.redis_server import RedisServer
from persistence.redis_store import RedisStore, redact_url
from persistence.sqlite import SqliteStore
from persistence.store import Checkpoint, MemoryStore, SnapshotStore

__all__ = [
    "DEFAULT_PARTITIONS",
    "DEFAULT_PREFIX",
    "SNAPSHOT_SCHEMA",
    "ZERO_OFFSET",
    "Checkpoint",
    "CommitWrite",
    "Fence",
    "FencedCheckpointStore",
    "FencedStore",
    "Journal",
    "JournalEntry",
    "JournalItem",
    "JournalStore",
    "KeyLayout",
    "MemoryJournalStore",
    "MemoryStore",
    "RedisServer",
    "RedisStore",
    "Snapshot",
    "SnapshotStore",
    "SnapshotWrite",
    "SqliteStore",
    "decode_snapshot",
    "encode_snapshot",
    "format_offset",
    "parse_offset",
    "redact_url",
]
