"""The snapshot store interface and its in-memory implementation.

A checkpoint is a profile's book state (plain data from ``to_state()``) together with the
sequence number of the last message applied to it. Saving one is atomic: a reader sees the old
checkpoint or the new one, never half of each.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """A profile's state as of message ``seq`` (everything up to and including it applied)."""

    profile_id: str
    seq: int
    state: dict[str, Any]


class SnapshotStore(Protocol):
    """Where profile actors make their state durable."""

    def save(self, checkpoint: Checkpoint) -> None:
        """Replace the profile's checkpoint; ``seq`` never goes backwards."""

    def load(self, profile_id: str) -> Checkpoint | None:
        """The latest checkpoint of ``profile_id``, or None if it never saved one."""


class MemoryStore:
    """Checkpoints in a dict: for tests and the embedded default of ``capflow run``.

    It survives actor crashes (the runtime's own process keeps it), not process death.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._checkpoints: dict[str, Checkpoint] = {}
        self.saves = 0

    def save(self, checkpoint: Checkpoint) -> None:
        with self._lock:
            old = self._checkpoints.get(checkpoint.profile_id)
            if old is not None and checkpoint.seq < old.seq:
                return  # a late write from a dead incarnation must not move the offset back
            self._checkpoints[checkpoint.profile_id] = checkpoint
            self.saves += 1

    def load(self, profile_id: str) -> Checkpoint | None:
        with self._lock:
            return self._checkpoints.get(profile_id)
