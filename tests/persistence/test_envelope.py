"""The snapshot envelope: round trip, and every kind of damage named (no silent reset)."""

from __future__ import annotations

from decimal import Decimal

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from messages import CorruptSnapshot, InvalidMessage, StateValue
from persistence import SNAPSHOT_SCHEMA, decode_snapshot, encode_snapshot

KEY = "{capflow:p0}:snap:alice"
STATE: dict[str, StateValue] = {
    "cash": 10_000,
    "price": Decimal("1.10"),
    "orders": [{"id": "o1", "open": True}],
    "x": None,
}


def test_round_trip_keeps_state_offset_and_fence_exactly():
    raw = encode_snapshot("alice", STATE, "1700000000000-5", 42)
    snap = decode_snapshot(raw, key=KEY, profile_id="alice", stored_offset="1700000000000-5")
    assert (snap.profile_id, snap.state, snap.offset, snap.fence) == (
        "alice",
        STATE,
        "1700000000000-5",
        42,
    )
    assert str(snap.state["price"]) == "1.10"  # the exponent survives
    assert msgpack.unpackb(raw)["schema"] == SNAPSHOT_SCHEMA == 1


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_decode_to_a_snapshot_silently(junk):
    with pytest.raises(CorruptSnapshot, match=r"^snapshot \{capflow:p0\}:snap:alice: "):
        decode_snapshot(junk, key=KEY, profile_id="alice")


@given(st.data())
def test_any_single_byte_change_is_caught(data):
    raw = encode_snapshot("alice", STATE, "3-1", 7)
    at = data.draw(st.integers(0, len(raw) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != raw[at]))
    damaged = raw[:at] + bytes([new]) + raw[at + 1 :]
    with pytest.raises(CorruptSnapshot, match=r"^snapshot \{capflow:p0\}:snap:alice: "):
        decode_snapshot(damaged, key=KEY, profile_id="alice")


@pytest.mark.parametrize(
    ("state", "offset", "message"),
    [
        ({"x": 1.5}, "1-0", r"^state value at \$\.x is a float \(1\.5\); floats are refused$"),
        ({"x": (1, 2)}, "1-0", r"^state value at \$\.x has unsupported type tuple$"),
        ({}, "1", r"^offset must be a stream id like '1700000000000-5', got '1'$"),
        ({}, "1-01", r"^offset must be a stream id like '1700000000000-5', got '1-01'$"),
        ({}, f"{2**64}-0", r"^offset must be a stream id like"),
    ],
)
def test_encode_refuses_what_cannot_be_stored_exactly(state, offset, message):
    with pytest.raises(InvalidMessage, match=message):
        encode_snapshot("alice", state, offset, 1)


def test_missing_and_extra_fields_are_named():
    obj = msgpack.unpackb(encode_snapshot("alice", {}, "1-0", 1))
    del obj["checksum"]
    obj["note"] = "hi"
    with pytest.raises(
        CorruptSnapshot,
        match=r"^snapshot \{capflow:p0\}:snap:alice: envelope fields: missing \['checksum'\], "
        r"unexpected \[\"'note'\"\]$",
    ):
        decode_snapshot(msgpack.packb(obj), key=KEY, profile_id="alice")
