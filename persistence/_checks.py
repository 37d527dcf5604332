"""Argument checks, commit preparation and error messages shared by every backend.

The backends differ in storage only; what they accept and what their errors say is decided
here once, so the contract suite can hold all three to the same words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from messages import InvalidConfig, InvalidMessage, StaleFence
from persistence.envelope import encode_snapshot
from persistence.interfaces import JournalItem, SnapshotWrite
from persistence.layout import KeyLayout, check_profile_id
from persistence.records import Fence, parse_offset


def check_name(kind: str, value: str) -> str:
    """A holder or consumer name: a non-empty str without spaces."""
    if type(value) is not str or not value or any(c.isspace() for c in value):
        raise InvalidConfig(f"{kind} must be a non-empty str without spaces, got {value!r}")
    return value


def check_int(kind: str, value: int, *, minimum: int) -> int:
    """An int (not a bool) of at least ``minimum``."""
    if type(value) is not int or value < minimum:
        raise InvalidConfig(f"{kind} must be an int >= {minimum}, got {value!r}")
    return value


def check_items(entries: Sequence[JournalItem]) -> list[JournalItem]:
    """``append``'s input: ``(str | None, bytes)`` pairs."""
    items = list(entries)
    for i, item in enumerate(items):
        if type(item) is not tuple or len(item) != 2:
            raise InvalidMessage(f"journal item {i} must be (dedupe_key, payload), got {item!r}")
        key, payload = item
        if not (key is None or (type(key) is str and key)):
            raise InvalidMessage(f"journal item {i}: dedupe key must be a non-empty str or None")
        if type(payload) is not bytes:
            raise InvalidMessage(f"journal item {i}: payload must be bytes, got {type(payload)}")
    return items


def check_fence(layout: KeyLayout, fence: Fence) -> Fence:
    if not isinstance(fence, Fence):
        raise InvalidMessage(f"expected a Fence, got {type(fence).__name__}")
    layout.check_partition(fence.partition)
    return fence


@dataclass(frozen=True, slots=True)
class PreparedSnapshot:
    """One snapshot of a commit, checked and encoded, ready for the backend to write."""

    profile_id: str
    key: str
    offset: str
    position: tuple[int, int]
    envelope: bytes


def prepare_commit(
    layout: KeyLayout,
    fence: Fence,
    snapshots: Mapping[str, SnapshotWrite],
    acks: Sequence[str],
) -> tuple[list[PreparedSnapshot], list[str]]:
    """Check a commit's arguments and build its envelopes (before touching the store).

    Raises:
        InvalidMessage: see ``FencedStore.commit``.
    """
    check_fence(layout, fence)
    prepared = []
    for profile_id, write in snapshots.items():
        check_profile_id(profile_id)
        partition = layout.partition_of(profile_id)
        if partition != fence.partition:
            raise InvalidMessage(
                f"profile {profile_id!r} lives in partition {partition}, "
                f"not in the fence's partition {fence.partition}"
            )
        if type(write) is not tuple or len(write) != 2:
            raise InvalidMessage(f"snapshot of {profile_id!r} must be (state, offset)")
        state, offset = write
        position = parse_offset(offset)
        envelope = encode_snapshot(profile_id, state, offset, fence.token)
        key = layout.snapshot(profile_id)
        prepared.append(PreparedSnapshot(profile_id, key, offset, position, envelope))
    ack_ids = list(acks)
    for ack in ack_ids:
        parse_offset(ack)
    return prepared, ack_ids


# --- error messages -------------------------------------------------------------------------


def lease_taken(
    partition: int, holder: str, other: str, token: int, remaining_ms: int
) -> StaleFence:
    return StaleFence(
        f"partition {partition} is leased to {other!r} (token {token}) for another "
        f"{remaining_ms} ms; {holder!r} refused"
    )


def fence_not_current(fence: Fence, action: str, current: tuple[str, int] | None) -> StaleFence:
    now = "no lease is live" if current is None else f"lease is {current[0]!r} token {current[1]}"
    return StaleFence(
        f"{action} refused: fence {fence.token} of {fence.holder!r} on partition "
        f"{fence.partition} is not current ({now})"
    )


def offset_backwards(profile_id: str, offset: str, stored: str) -> StaleFence:
    return StaleFence(
        f"commit refused: snapshot of profile {profile_id!r} at offset {offset} "
        f"would go back from {stored}"
    )
