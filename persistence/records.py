"""Values the journal and the fenced store hand out: fences, journal entries, snapshots.

Offsets are stream entry ids as Redis writes them, ``"<ms>-<seq>"`` (two unsigned 64-bit
decimals, no leading zeros), ordered by ``(ms, seq)``. ``"0-0"`` is the offset of a profile that
has applied nothing. The embedded stores produce ids of the same form and order, so a snapshot's
offset means the same thing whichever store wrote it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from messages import InvalidMessage, StateValue

#: Offset of a profile that has applied no journal entry yet.
ZERO_OFFSET: Final = "0-0"

_OFFSET = re.compile(r"(0|[1-9][0-9]{0,19})-(0|[1-9][0-9]{0,19})")
_U64: Final = 2**64


def parse_offset(offset: str) -> tuple[int, int]:
    """Split a stream entry id into ``(ms, seq)``; the tuple orders like the ids do.

    Raises:
        InvalidMessage: ``offset`` is not ``"<ms>-<seq>"`` of two canonical unsigned 64-bit
            decimals.
    """
    match = _OFFSET.fullmatch(offset) if type(offset) is str else None
    if match is not None:
        ms, seq = int(match[1]), int(match[2])
        if ms < _U64 and seq < _U64:
            return ms, seq
    raise InvalidMessage(f"offset must be a stream id like '1700000000000-5', got {offset!r}")


def format_offset(ms: int, seq: int) -> str:
    """The stream id text of ``(ms, seq)``."""
    return f"{ms}-{seq}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Fence:
    """Proof of holding a partition's lease: only the current fence may commit to it.

    Attributes:
        partition: the partition the lease covers.
        holder: who acquired it (a worker name; stable across that worker's restarts).
        token: the fencing token, larger than every token handed out before for this partition.
        ttl_ms: the lease's time to live, used again by ``renew_lease``.
    """

    partition: int
    holder: str
    token: int
    ttl_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalEntry:
    """One ingested item of a partition's journal (an exchange fill, as bytes).

    Attributes:
        partition: the partition whose journal holds it.
        entry_id: its stream id: the offset a snapshot records once it is applied.
        dedupe_key: the exchange trade id it was ingested under, or None.
        payload: the bytes given to ``append``.
    """

    partition: int
    entry_id: str
    dedupe_key: str | None
    payload: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """A profile's committed state: everything up to and including ``offset`` applied.

    Attributes:
        profile_id: whose state it is.
        state: plain data, as given to ``commit`` (a fresh dict on every load).
        offset: the id of the last journal entry applied to ``state``.
        fence: the fencing token of the commit that wrote it.
    """

    profile_id: str
    state: dict[str, StateValue]
    offset: str
    fence: int
