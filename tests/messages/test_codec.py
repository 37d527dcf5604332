"""The msgpack codec: exact round trips, a pinned wire format, and DecodeError for all else."""

from __future__ import annotations

import dataclasses
import enum
import sys
from decimal import Decimal

import msgpack
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import messages
from messages import (
    DECIMAL_EXT,
    MAX_STATE_DEPTH,
    WIRE_SPECS,
    CrashProfile,
    DecodeError,
    Fill,
    FillApplied,
    InvalidAmount,
    InvalidMessage,
    Message,
    PlaceOrder,
    Side,
    StateValue,
    decode,
    decode_state,
    encode,
    encode_state,
)
from tests.messages.examples import EXAMPLES, build
from tests.messages.strategies import STRATEGIES, any_message, assert_identical, states

#: The wire schema, pinned. A failure here means a field changed: bump that tag's version
#: (and teach decode the old one if stored bytes of it may exist), then update this table.
WIRE_SCHEMA = {
    "bootstrap_completed": (1, ("profile_id", "replayed")),
    "bootstrap_started": (1, ("profile_id",)),
    "cancel_order": (1, ("profile_id", "client_order_id", "exchange_order_id")),
    "close_position": (
        1,
        ("profile_id", "signal_id", "symbol", "position_id", "qty", "limit_price"),
    ),
    "crash_profile": (1, ("profile_id",)),
    "dead_lettered": (1, ("profile_id", "seq", "payload_type", "error", "attempts")),
    "fill": (
        1,
        (
            "trade_id",
            "order_id",
            "client_order_id",
            "symbol",
            "side",
            "qty",
            "price",
            "cost",
            "fee",
            "fee_asset",
            "liquidity",
        ),
    ),
    "fill_applied": (1, ("profile_id", "trade_id", "client_order_id", "qty", "duplicate")),
    "fill_rejected": (1, ("profile_id", "trade_id", "reason", "detail")),
    "invariant_violated": (1, ("profile_id", "detail")),
    "open_position": (
        1,
        ("profile_id", "signal_id", "symbol", "position_id", "qty", "limit_price", "estimate"),
    ),
    "order_accepted": (
        1,
        ("profile_id", "client_order_id", "exchange_order_id", "symbol", "side", "qty", "price"),
    ),
    "order_canceled": (1, ("profile_id", "client_order_id", "exchange_order_id", "remaining")),
    "order_rejected": (1, ("profile_id", "client_order_id", "reason")),
    "place_order": (
        1,
        ("profile_id", "client_order_id", "symbol", "side", "qty", "price", "order_type"),
    ),
    "price_tick": (1, ("symbol", "price")),
    "reservation_rejected": (
        1,
        (
            "profile_id",
            "client_order_id",
            "signal_id",
            "reason",
            "needed",
            "available",
            "detail",
        ),
    ),
    "start_grid": (
        1,
        (
            "profile_id",
            "symbol",
            "center_price",
            "increment",
            "target_spread",
            "min_price",
            "max_price",
            "active_orders",
            "budget_base",
            "budget_quote",
        ),
    ),
}
BASE_FIELDS = ("message_id", "ts_ns", "correlation_id")
TAG = {spec.cls: tag for tag, spec in WIRE_SPECS.items()}
ALL_TYPES = sorted(TAG, key=TAG.__getitem__)


def _all_message_classes() -> set[type[Message]]:
    """Message subclasses defined in the messages package (slots=True leaves a stale original
    class behind in ``__subclasses__``: keep only the one its module exports)."""
    found: set[type[Message]] = set()
    todo = [Message]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            module = sys.modules[sub.__module__]
            if sub.__module__.startswith("messages.") and getattr(module, sub.__name__, 0) is sub:
                found.add(sub)
    return found


def _fill() -> Fill:
    fill: Fill = build(Fill)
    return fill


def _wire(tag: str, version: int, body: dict[str, object]) -> bytes:
    def default(obj: object) -> object:
        if isinstance(obj, Decimal):
            return msgpack.ExtType(DECIMAL_EXT, str(obj).encode())
        if isinstance(obj, enum.Enum):
            return obj.value
        raise TypeError(obj)

    packed: bytes = msgpack.packb([tag, version, body], default=default)
    return packed


def _fill_body(**changes: object) -> dict[str, object]:
    fill = _fill()
    body = {f.name: getattr(fill, f.name) for f in dataclasses.fields(fill)}
    return {**body, **changes}


# --- registry -------------------------------------------------------------------------------


def test_registry_strategies_and_message_classes_are_the_same_set():
    registered = {spec.cls for spec in WIRE_SPECS.values()}
    assert registered == set(STRATEGIES)
    assert registered == set(EXAMPLES)
    # every Message subclass defined anywhere in messages/ is on the wire
    assert registered == _all_message_classes()
    assert all(getattr(messages, cls.__name__) is cls for cls in registered)


def test_wire_schema_is_pinned():
    actual = {tag: (spec.version, spec.fields) for tag, spec in WIRE_SPECS.items()}
    expected = {tag: (v, BASE_FIELDS + names) for tag, (v, names) in WIRE_SCHEMA.items()}
    assert actual == expected
    assert all(spec.tag == tag for tag, spec in WIRE_SPECS.items())


def test_fill_wire_format_is_tag_version_and_named_fields():
    raw = msgpack.unpackb(encode(_fill()), raw=False)
    assert raw == [
        "fill",
        1,
        {
            "message_id": "m-1",
            "ts_ns": 1_700_000_000_000_000_000,
            "correlation_id": "sig-1",
            "trade_id": "t-1",
            "order_id": "x1",
            "client_order_id": "cf-p1-sig-1",
            "symbol": "BTC/USDT",
            "side": "buy",
            "qty": 1_000_000,
            "price": msgpack.ExtType(DECIMAL_EXT, b"43250.50"),
            "cost": 432_505_000,
            "fee": 432_505,
            "fee_asset": "USDT",
            "liquidity": "taker",
        },
    ]
    assert type(raw[2]["side"]) is str


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_TYPES)
@given(data=st.data())
def test_round_trip_is_exact_for_every_type(cls, data):
    msg = data.draw(STRATEGIES[cls])
    wire = encode(msg)
    back = decode(wire)
    assert back == msg
    assert_identical(back, msg)
    assert encode(back) == wire  # one value, one encoding


@pytest.mark.parametrize(
    "text", ["1.10", "1.1", "1E+2", "100", "1.000000000000000000000000000000001", "0.0100"]
)
def test_decimal_exponent_survives(text):
    price = Decimal(text)
    back = decode(encode(build(Fill, price=price)))
    assert isinstance(back, Fill)
    assert back.price.as_tuple() == price.as_tuple()
    assert str(back.price) == text


def test_equal_decimals_with_other_exponents_encode_differently():
    assert encode(build(Fill, price=Decimal("1.10"))) != encode(build(Fill, price=Decimal("1.1")))


def test_encode_refuses_what_is_not_registered():
    with pytest.raises(
        InvalidMessage, match=r"^cannot encode Message: not a registered message type$"
    ):
        encode(Message(message_id="m", ts_ns=0))

    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class MyFill(Fill):
        pass

    with pytest.raises(InvalidMessage, match=r"^cannot encode MyFill: not a registered"):
        encode(MyFill(**{f.name: getattr(_fill(), f.name) for f in dataclasses.fields(Fill)}))
    with pytest.raises(InvalidMessage, match=r"^cannot encode dict: not a registered"):
        encode({"tag": "fill"})  # type: ignore[arg-type]


def test_timestamps_are_bounded_to_int64_so_every_message_can_be_encoded():
    assert decode(encode(build(CrashProfile, ts_ns=2**63 - 1))).ts_ns == 2**63 - 1
    with pytest.raises(
        InvalidMessage,
        match=r"^ts_ns must be an int of nanoseconds in \[0, 2\*\*63\), got 9223372036854775808$",
    ):
        build(CrashProfile, ts_ns=2**63)


# --- decode errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "pattern"),
    [
        pytest.param(_wire("xyz", 1, {}), r"^unknown message tag 'xyz'$", id="unknown-tag"),
        pytest.param(_wire("Fill", 1, {}), r"^unknown message tag 'Fill'$", id="tag-case"),
        pytest.param(
            msgpack.packb([b"fill", 1, {}]), r"^unknown message tag b'fill'$", id="tag-bin"
        ),
        pytest.param(msgpack.packb([7, 1, {}]), r"^unknown message tag 7$", id="tag-int"),
        pytest.param(
            _wire("fill", 9, _fill_body()),
            r"^fill schema version 9 not supported \(expected 1\)$",
            id="version",
        ),
        pytest.param(
            _wire("fill", True, _fill_body()),
            r"^fill schema version True not supported \(expected 1\)$",
            id="version-bool",
        ),
        pytest.param(
            msgpack.packb(["fill", "1", {}]),
            r"^fill schema version '1' not supported \(expected 1\)$",
            id="version-str",
        ),
        pytest.param(
            msgpack.packb(["fill", 1]),
            r"^expected a \[tag, version, fields\] array, got \['fill', 1\]$",
            id="short-array",
        ),
        pytest.param(
            msgpack.packb({"tag": "fill"}),
            r"^expected a \[tag, version, fields\] array, got \{'tag': 'fill'\}$",
            id="map",
        ),
        pytest.param(
            msgpack.packb(["fill", 1, [1, 2]]),
            r"^fill fields must be a map, got \[1, 2\]$",
            id="fields-array",
        ),
        pytest.param(
            _wire("fill", 1, {k: v for k, v in _fill_body().items() if k not in ("qty", "fee")}),
            r"^fill fields: missing fee, qty$",
            id="missing",
        ),
        pytest.param(
            _wire("fill", 1, _fill_body(venue="x", zeta=1)),
            r"^fill fields: unexpected 'venue', 'zeta'$",
            id="extra",
        ),
        pytest.param(
            _wire("crash_profile", 1, {"message_id": "m", "ts_ns": 0, "profile": "p"}),
            r"^crash_profile fields: missing correlation_id, profile_id; unexpected 'profile'$",
            id="missing-and-extra",
        ),
        pytest.param(
            msgpack.packb(["fill", 1, {b"qty": 1}], use_bin_type=True),
            r"^fill fields: missing .*; unexpected b'qty'$",
            id="bin-key",
        ),
        pytest.param(
            _wire("fill", 1, _fill_body(qty=1.0)),
            r"^fill field qty is a float \(1\.0\); floats are refused$",
            id="float-qty",
        ),
        pytest.param(
            _wire("fill", 1, _fill_body(price=43250.5)),
            r"^fill field price is a float \(43250\.5\); floats are refused$",
            id="float-price",
        ),
        pytest.param(
            _wire("fill", 1, _fill_body(message_id=float("nan"))),
            r"^fill field message_id is a float \(nan\); floats are refused$",
            id="float-nan-id",
        ),
        pytest.param(
            _wire("fill", 1, _fill_body(qty="5")),
            r"^invalid fill: qty must be an int of minor units, got str '5'$",
            id="str-qty",
        ),
        pytest.param(
            _wire("fill", 1, _fill_body(qty=True)),
            r"^invalid fill: qty must be an int of minor units, got bool True$",
            id="bool-qty",
        ),
        pytest.param(
            _wire("fill", 1, _fill_body(qty=2**64 - 1)),
            rf"^invalid fill: qty {2**64 - 1} exceeds the largest amount {2**63 - 1}$",
            id="huge-qty",
        ),
        pytest.param(
            _wire("fill", 1, _fill_body(price="43250.50")),
            r"^invalid fill: price must be a Decimal, got str '43250\.50'$",
            id="str-price",
        ),
        pytest.param(
            _wire("fill", 1, _fill_body(side="hold")),
            r"^invalid fill: side must be a Side, got 'hold'$",
            id="enum-value",
        ),
        pytest.param(
            _wire("fill", 1, _fill_body(side=["buy"])),
            r"^invalid fill: side must be a Side, got \['buy'\]$",
            id="enum-unhashable",
        ),
        pytest.param(
            _wire("fill", 1, _fill_body(symbol=b"BTC/USDT")),
            r"^invalid fill: symbol must be a non-empty string of <= 200 chars, got b'BTC/USDT'$",
            id="bin-str",
        ),
        pytest.param(
            _wire(
                "place_order",
                1,
                {"message_id": "m", "ts_ns": 0, "correlation_id": None}
                | EXAMPLES[PlaceOrder]
                | {"price": None},
            ),
            r"^invalid place_order: a limit order needs a price, got None$",
            id="cross-field",
        ),
    ],
)
def test_decode_error_names_what_was_wrong(wire, pattern):
    with pytest.raises(DecodeError, match=pattern):
        decode(wire)


def test_field_validation_error_is_chained():
    with pytest.raises(DecodeError) as info:
        decode(_wire("fill", 1, _fill_body(qty=-5)))
    assert str(info.value) == "invalid fill: qty must not be negative, got -5"
    assert type(info.value.__cause__) is InvalidAmount
    assert str(info.value.__cause__) == "qty must not be negative, got -5"


def _ext(code: int, payload: bytes) -> bytes:
    body = _fill_body(price=msgpack.ExtType(code, payload))
    return _wire("fill", 1, body)


@pytest.mark.parametrize(
    ("wire", "pattern"),
    [
        (_ext(5, b"1"), r"^unknown msgpack ext type 5$"),
        (_ext(DECIMAL_EXT, b"abc"), r"^Decimal ext holds b'abc', not a number$"),
        (_ext(DECIMAL_EXT, b""), r"^Decimal ext holds b'', not a number$"),
        (_ext(DECIMAL_EXT, b"\xff1"), r"^Decimal ext holds b'\\xff1', not a number$"),
        (_ext(DECIMAL_EXT, "\u0661".encode()), r"^Decimal ext holds b'\\xd9\\xa1', not a number$"),
        (_ext(DECIMAL_EXT, b"NaN"), r"^Decimal ext holds 'NaN', not a finite canonical Decimal$"),
        (_ext(DECIMAL_EXT, b"-Infinity"), r"^Decimal ext holds '-Infinity', not a finite"),
        (_ext(DECIMAL_EXT, b" 1.5"), r"^Decimal ext holds ' 1\.5', not a finite canonical"),
        (_ext(DECIMAL_EXT, b"1_000"), r"^Decimal ext holds '1_000', not a finite canonical"),
        (_ext(DECIMAL_EXT, b"1e2"), r"^Decimal ext holds '1e2', not a finite canonical"),
        (_ext(DECIMAL_EXT, b"+1"), r"^Decimal ext holds '\+1', not a finite canonical"),
        (_ext(DECIMAL_EXT, b"01.5"), r"^Decimal ext holds '01\.5', not a finite canonical"),
        (
            _wire("fill", 1, _fill_body(price=msgpack.Timestamp(1))),
            r"^invalid fill: price must be a Decimal, got Timestamp",
        ),
        (
            # a msgpack timestamp (ext -1) of an impossible length
            _ext(DECIMAL_EXT, b"43250.50").replace(b"\xd7\x0143250.50", b"\xd4\xff\x00"),
            r"^truncated or malformed msgpack: invalid timestamp data \(length 1\)$",
        ),
    ],
)
def test_decode_refuses_bad_ext_values(wire, pattern):
    with pytest.raises(DecodeError, match=pattern):
        decode(wire)


def test_decimal_ext_canonical_forms_decode():
    assert decode(_ext(DECIMAL_EXT, b"1E+2")).price.as_tuple() == Decimal("1E+2").as_tuple()  # type: ignore[attr-defined]
    assert str(decode(_ext(DECIMAL_EXT, b"0.0100")).price) == "0.0100"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        (b"", r"^truncated or malformed msgpack: Unpack failed: incomplete input$"),
        (b"\xc1", r"^truncated or malformed msgpack: "),
        (encode(build(CrashProfile)) + b"\x00", r"^trailing bytes: 1 after a complete value$"),
        (encode(build(CrashProfile)) * 2, r"^trailing bytes: \d+ after a complete value$"),
        (b"\x81\x01\x02", r"^truncated or malformed msgpack: int is not allowed for map key"),
        ("fill", r"^expected bytes, got str$"),
        (None, r"^expected bytes, got NoneType$"),
        (b"\x91" * 5000, r"^truncated or malformed msgpack: "),
    ],
)
def test_decode_refuses_malformed_bytes(data, pattern):
    with pytest.raises(DecodeError, match=pattern):
        decode(data)


def test_decode_accepts_bytearray_and_memoryview():
    wire = encode(_fill())
    assert decode(bytearray(wire)) == _fill()
    assert decode(memoryview(wire)) == _fill()


@given(any_message)
def test_every_prefix_of_a_valid_encoding_is_refused(msg):
    wire = encode(msg)
    for end in range(len(wire)):
        with pytest.raises(DecodeError):
            decode(wire[:end])


def _decode_or_decode_error(data: bytes) -> Message | None:
    try:
        msg = decode(data)
    except DecodeError:
        return None
    assert type(msg) in {spec.cls for spec in WIRE_SPECS.values()}
    assert decode(encode(msg)) == msg
    return msg


@given(st.binary(max_size=400))
@example(b"\x93\xa4fill\x01\x80")
@example(b"\x93\xa4fill\x01\xde\xff\xff")
def test_garbage_raises_only_decode_error(data):
    _decode_or_decode_error(data)


@given(any_message, st.data())
def test_mutated_encodings_raise_only_decode_error(msg, data):
    wire = bytearray(encode(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(wire) - 1))
        action = data.draw(st.sampled_from(["flip", "set", "insert", "delete"]))
        if action == "flip":
            wire[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "set":
            wire[pos] = data.draw(st.integers(0, 255))
        elif action == "insert":
            wire.insert(pos, data.draw(st.integers(0, 255)))
        elif len(wire) > 1:
            del wire[pos]
    _decode_or_decode_error(bytes(wire))


@pytest.mark.parametrize("cls", ALL_TYPES)
def test_a_float_in_any_field_is_refused(cls):
    spec = WIRE_SPECS[TAG[cls]]
    example_msg = build(cls)
    body = {name: getattr(example_msg, name) for name in spec.fields}
    for name in spec.fields:
        with pytest.raises(DecodeError, match=rf"^{spec.tag} field {name} is a float \(2\.0\);"):
            decode(_wire(spec.tag, 1, {**body, name: 2.0}))


@pytest.mark.parametrize("cls", ALL_TYPES)
def test_every_field_is_validated(cls):
    """No field takes an arbitrary value: a list anywhere is refused by the class itself."""
    for name in WIRE_SPECS[TAG[cls]].fields:
        with pytest.raises(InvalidMessage):
            build(cls, **{name: [1]})


def test_match_on_decoded_messages_uses_keywords():
    match decode(encode(build(FillApplied, duplicate=True))):
        case FillApplied(duplicate=True, qty=qty):
            assert qty == 1_000_000
        case _:
            pytest.fail("FillApplied did not match")


def test_decoded_enums_are_members_not_strings():
    back = decode(encode(build(PlaceOrder)))
    assert isinstance(back, PlaceOrder)
    assert back.side is Side.BUY
    assert type(back.order_type) is type(EXAMPLES[PlaceOrder]["order_type"])


# --- snapshot state -------------------------------------------------------------------------


@given(states)
def test_state_round_trip_is_exact(state):
    wire = encode_state(state)
    assert_identical(decode_state(wire), state)
    assert encode_state(decode_state(wire)) == wire


def test_state_example():
    state: dict[str, StateValue] = {
        "cash": 1_000_000,
        "price": Decimal("0.0100"),
        "halted": False,
        "note": None,
        "slots": [{"id": "s1", "size": 5}, {"id": "s2", "size": -3}],
    }
    back = decode_state(encode_state(state))
    assert_identical(back, state)
    assert str(back["price"]) == "0.0100"


class _Color(enum.StrEnum):
    RED = "red"


class _Int(int):
    pass


@pytest.mark.parametrize(
    ("state", "pattern"),
    [
        ({"a": [1, 1.5]}, r"^state value at \$\.a\[1\] is a float \(1\.5\); floats are refused$"),
        ({"a": {"b": float("inf")}}, r"^state value at \$\.a\.b is a float \(inf\);"),
        ({"a": (1, 2)}, r"^state value at \$\.a has unsupported type tuple$"),
        ({"a": {1, 2}}, r"^state value at \$\.a has unsupported type set$"),
        ({"a": b"x"}, r"^state value at \$\.a has unsupported type bytes$"),
        ({"a": _Color.RED}, r"^state value at \$\.a has unsupported type _Color$"),
        ({"a": _Int(3)}, r"^state value at \$\.a has unsupported type _Int$"),
        ({"a": Side.BUY}, r"^state value at \$\.a has unsupported type Side$"),
        ({"a": {1: "x"}}, r"^state key at \$\.a must be a str, got 1$"),
        ({"a": Decimal("NaN")}, r"^state Decimal at \$\.a must be finite, got NaN$"),
        ({"a": Decimal("-Infinity")}, r"^state Decimal at \$\.a must be finite, got -Infinity$"),
        ({"a": 2**64}, r"^state int at \$\.a is out of the msgpack range: 18446744073709551616$"),
        (
            {"a": -(2**63) - 1},
            r"^state int at \$\.a is out of the msgpack range: -9223372036854775809$",
        ),
        ([1], r"^state must be a dict, got list$"),
    ],
)
def test_encode_state_refuses_what_would_not_come_back(state, pattern):
    with pytest.raises(InvalidMessage, match=pattern):
        encode_state(state)


def _nested(depth: int) -> dict[str, object]:
    root: dict[str, object] = {}
    node = root
    for _ in range(depth - 1):
        child: dict[str, object] = {}
        node["x"] = child
        node = child
    node["leaf"] = [1]
    return root


def test_state_depth_is_bounded_both_ways():
    deepest = _nested(MAX_STATE_DEPTH - 1)  # plus the list: MAX_STATE_DEPTH containers
    assert decode_state(encode_state(deepest)) == deepest  # type: ignore[arg-type]
    too_deep = _nested(MAX_STATE_DEPTH)
    pattern = rf"^state nests deeper than {MAX_STATE_DEPTH} levels at \$\.x\.x(\.x)+\.\.\.$"
    with pytest.raises(InvalidMessage, match=pattern):
        encode_state(too_deep)  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match=pattern):
        decode_state(msgpack.packb(too_deep))
    # deeper than msgpack itself can pack (it would pack 1,024 levels it cannot unpack)
    with pytest.raises(InvalidMessage, match=pattern):
        encode_state(_nested(5000))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        (
            msgpack.packb({"a": 1.5}),
            r"^state value at \$\.a is a float \(1\.5\); floats are refused$",
        ),
        (
            msgpack.packb({"a": b"x"}, use_bin_type=True),
            r"^state value at \$\.a has unsupported type bytes$",
        ),
        (msgpack.packb([1]), r"^state must be a dict, got list$"),
        (msgpack.packb({"a": msgpack.ExtType(9, b"")}), r"^unknown msgpack ext type 9$"),
        (msgpack.packb({b"a": 1}, use_bin_type=True), r"^state key at \$ must be a str, got b'a'$"),
        (
            msgpack.packb({"a": msgpack.Timestamp(1)}),
            r"^state value at \$\.a has unsupported type Timestamp$",
        ),
        (msgpack.packb({"a": 1}) + b"\x00", r"^trailing bytes: 1 after a complete value$"),
        (b"\x81\xa1a" + b"\x91" * 3000, r"^truncated or malformed msgpack: "),
        (b"", r"^truncated or malformed msgpack: Unpack failed: incomplete input$"),
    ],
)
def test_decode_state_refuses_anything_else(data, pattern):
    with pytest.raises(DecodeError, match=pattern):
        decode_state(data)


@given(st.binary(max_size=300))
def test_state_garbage_raises_only_decode_error(data):
    try:
        state = decode_state(data)
    except DecodeError:
        return
    assert encode_state(state)
