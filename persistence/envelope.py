"""The snapshot envelope: a profile's state with its offset, fence and a checksum.

One msgpack map, the same bytes in every store::

    {"schema": 1, "profile_id": str, "offset": "<ms>-<seq>", "fence": int,
     "state": bin (messages.encode_state), "checksum": bin (16 bytes)}

The checksum is BLAKE2b-128 over ``msgpack([schema, profile_id, offset, fence])`` followed by
the state bytes, so a flipped bit anywhere that matters is caught, and an envelope copied under
another profile's key is refused by the profile id check. Decoding never repairs and never
resets: whatever is wrong raises :class:`~messages.errors.CorruptSnapshot` naming the key.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import msgpack

from messages import (
    CorruptSnapshot,
    DecodeError,
    StateValue,
    decode_state,
    encode_state,
)
from persistence.records import Snapshot, parse_offset

#: Version of the envelope layout; decoding refuses any other.
SNAPSHOT_SCHEMA: Final = 1

_FIELDS: Final = frozenset({"schema", "profile_id", "offset", "fence", "state", "checksum"})
_DIGEST_SIZE: Final = 16


def _checksum(schema: int, profile_id: str, offset: str, fence: int, state: bytes) -> bytes:
    digest = hashlib.blake2b(digest_size=_DIGEST_SIZE, person=b"capflow.snap")
    digest.update(msgpack.packb([schema, profile_id, offset, fence]))
    digest.update(state)
    return digest.digest()


def encode_snapshot(
    profile_id: str, state: dict[str, StateValue], offset: str, fence: int
) -> bytes:
    """Wrap ``state`` in a checksummed envelope.

    Raises:
        InvalidMessage: ``state`` is not plain snapshot data (see ``messages.encode_state``)
            or ``offset`` is not a stream id.
    """
    parse_offset(offset)
    body = encode_state(state)
    envelope = {
        "schema": SNAPSHOT_SCHEMA,
        "profile_id": profile_id,
        "offset": offset,
        "fence": fence,
        "state": body,
        "checksum": _checksum(SNAPSHOT_SCHEMA, profile_id, offset, fence, body),
    }
    out: bytes = msgpack.packb(envelope, use_bin_type=True)
    return out


def decode_snapshot(
    raw: bytes, *, key: str, profile_id: str, stored_offset: str | None = None
) -> Snapshot:
    """Verify and open an envelope read from ``key``, expected to hold ``profile_id``.

    ``stored_offset`` is the offset a store keeps beside the envelope (to order commits
    without decoding); when given, the envelope must agree with it.

    Raises:
        CorruptSnapshot: truncated or not msgpack, not a capflow envelope, another schema
            version, a checksum mismatch, another profile's snapshot, an offset that disagrees
            with ``stored_offset``, or state that is not plain snapshot data. The message names
            ``key`` and the problem.
    """

    def corrupt(problem: str) -> CorruptSnapshot:
        return CorruptSnapshot(f"snapshot {key}: {problem}")

    try:
        obj: Any = msgpack.unpackb(raw, raw=False)
    except msgpack.ExtraData as exc:
        raise corrupt(f"{len(exc.extra)} trailing bytes after the envelope") from exc
    except Exception as exc:  # msgpack raises several types for short or malformed input
        raise corrupt(f"truncated or not msgpack ({len(raw)} bytes): {exc}") from exc
    if type(obj) is not dict or "schema" not in obj:
        raise corrupt(f"not a capflow snapshot envelope (got {type(obj).__name__})")
    schema = obj["schema"]
    if schema != SNAPSHOT_SCHEMA or type(schema) is not int:
        raise corrupt(f"schema version {schema!r} not supported (expected {SNAPSHOT_SCHEMA})")
    if obj.keys() != _FIELDS:
        missing = sorted(_FIELDS - obj.keys())
        extra = sorted(map(repr, obj.keys() - _FIELDS))
        raise corrupt(f"envelope fields: missing {missing}, unexpected {extra}")
    pid, offset, fence = obj["profile_id"], obj["offset"], obj["fence"]
    body, checksum = obj["state"], obj["checksum"]
    if not (
        type(pid) is str
        and type(offset) is str
        and type(fence) is int
        and type(body) is bytes
        and type(checksum) is bytes
    ):
        raise corrupt("envelope field of the wrong type")
    if checksum != _checksum(schema, pid, offset, fence, body):
        raise corrupt("bad checksum (the stored bytes were altered)")
    if pid != profile_id:
        raise corrupt(f"holds profile {pid!r}, expected {profile_id!r}")
    if stored_offset is not None and offset != stored_offset:
        raise corrupt(f"envelope offset {offset} disagrees with stored offset {stored_offset}")
    try:
        parse_offset(offset)
        state = decode_state(body)
    except (DecodeError, ValueError) as exc:
        raise corrupt(f"checksum matches but the content is invalid: {exc}") from exc
    return Snapshot(profile_id=pid, state=state, offset=offset, fence=fence)
