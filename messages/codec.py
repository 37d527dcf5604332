"""Bytes for messages and snapshot state: msgpack with exact Decimals, never floats.

Wire format of a message (one msgpack value, nothing after it)::

    [tag: str, version: int, {field_name: value, ...}]

* ``tag`` names the class (``"fill"``), ``version`` its schema version; both come from
  :data:`WIRE_SPECS`. Every field of the dataclass is present, by name, no others.
* ``int`` stays a msgpack int, ``str`` a msgpack str, ``bool`` a bool, ``None`` nil, an enum its
  value (a str).
* ``Decimal`` is ext type :data:`DECIMAL_EXT` (1) holding ``str(d)`` as ASCII, e.g. ``b"1.10"``:
  exact, exponent kept (``Decimal("1.10")`` and ``Decimal("1.1")`` encode differently). Only
  finite values in canonical form are accepted when decoding.
* Floats are never written; a float, a bin, an unknown ext type or any other type is refused
  when decoding.

Decoding builds the dataclass, so every field is validated as if constructed in code; whatever
is wrong with the bytes (unknown tag, other version, missing/extra/mistyped fields, truncated or
trailing bytes, not msgpack at all) raises :class:`~messages.errors.DecodeError` and nothing else.

:func:`encode_state`/:func:`decode_state` use the same value encoding for snapshot dicts of
``None``/``bool``/``int``/``str``/``Decimal``/``list``/``dict[str, ...]`` without tag or version:
the persistence layer wraps them with its own schema version and checksum.
"""

from __future__ import annotations

import enum
import operator
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final, TypeAlias

import msgpack

from messages.base import Message
from messages.commands import (
    CancelOrder,
    ClosePosition,
    CrashProfile,
    OpenPosition,
    PlaceOrder,
    PriceTick,
    StartGrid,
)
from messages.errors import DecodeError, InputError, InvalidMessage
from messages.events import (
    BootstrapCompleted,
    BootstrapStarted,
    DeadLettered,
    Fill,
    FillApplied,
    FillRejected,
    InvariantViolated,
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    ReservationRejected,
)

#: msgpack ext type code of an exact ``Decimal`` (payload: ASCII ``str(d)``).
DECIMAL_EXT: Final = 1

#: What a snapshot may hold (for annotations). Exact types only: a subclass (an enum, an
#: IntEnum) would not come back as itself.
StateValue: TypeAlias = (
    "bool | int | str | Decimal | list[StateValue] | dict[str, StateValue] | None"
)

#: Containers nested in a snapshot, the top-level dict included.
MAX_STATE_DEPTH: Final = 100

_MIN_INT: Final = -(2**63)
_MAX_INT: Final = 2**64 - 1

# tag, class, schema version. Adding a message type is one line here. Changing a class's fields
# means a new version; a tag is never reused for another class.
_TABLE: Final[tuple[tuple[str, type[Message], int], ...]] = (
    ("bootstrap_completed", BootstrapCompleted, 1),
    ("bootstrap_started", BootstrapStarted, 1),
    ("cancel_order", CancelOrder, 1),
    ("close_position", ClosePosition, 1),
    ("crash_profile", CrashProfile, 1),
    ("dead_lettered", DeadLettered, 1),
    ("fill", Fill, 1),
    ("fill_applied", FillApplied, 1),
    ("fill_rejected", FillRejected, 1),
    ("invariant_violated", InvariantViolated, 1),
    ("open_position", OpenPosition, 1),
    ("order_accepted", OrderAccepted, 1),
    ("order_canceled", OrderCanceled, 1),
    ("order_rejected", OrderRejected, 1),
    ("place_order", PlaceOrder, 1),
    ("price_tick", PriceTick, 1),
    ("reservation_rejected", ReservationRejected, 1),
    ("start_grid", StartGrid, 1),
)


def _enum_of(hint: object) -> type[enum.Enum] | None:
    """The enum class in a field's type hint (``Side`` or ``Side | None``), if there is one."""
    for candidate in (hint, *typing.get_args(hint)):
        if isinstance(candidate, type) and issubclass(candidate, enum.Enum):
            return candidate
    return None


@dataclass(frozen=True, slots=True)
class WireSpec:
    """How one message class is written: its tag, schema version and field names in order.

    Attributes:
        tag: stable short name on the wire, e.g. ``"fill"``.
        cls: the message class.
        version: schema version of the class's fields, from 1.
        fields: the dataclass field names, in declaration order.
    """

    tag: str
    cls: type[Message]
    version: int
    fields: tuple[str, ...] = field(init=False)
    # Precomputed once so the hot path does no reflection.
    _field_set: frozenset[str] = field(init=False, repr=False, compare=False)
    _getter: Callable[[Message], tuple[Any, ...]] = field(init=False, repr=False, compare=False)
    _enums: tuple[tuple[str, dict[str, enum.Enum]], ...] = field(
        init=False, repr=False, compare=False
    )
    _header: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = tuple(f.name for f in fields(self.cls))
        hints = typing.get_type_hints(self.cls)
        enums = []
        for name in names:
            enum_type = _enum_of(hints[name])
            if enum_type is not None:
                enums.append((name, {m.value: m for m in enum_type}))
        # Returns a tuple: every message has at least Message's three fields.
        getter = operator.attrgetter(*names)
        object.__setattr__(self, "fields", names)
        object.__setattr__(self, "_field_set", frozenset(names))
        object.__setattr__(self, "_getter", getter)
        object.__setattr__(self, "_enums", tuple(enums))
        # msgpack array of 3 (0x93), then the tag and version: the same bytes for every message
        header = b"\x93" + msgpack.packb(self.tag) + msgpack.packb(self.version)
        object.__setattr__(self, "_header", header)


def _build_specs() -> tuple[dict[str, WireSpec], dict[type[Message], WireSpec]]:
    by_tag: dict[str, WireSpec] = {}
    by_class: dict[type[Message], WireSpec] = {}
    for tag, cls, version in _TABLE:
        if tag in by_tag or cls in by_class:
            raise RuntimeError(f"message tag {tag!r} or class {cls.__name__} registered twice")
        by_tag[tag] = by_class[cls] = WireSpec(tag, cls, version)
    return by_tag, by_class


_BY_TAG, _BY_CLASS = _build_specs()

#: Every registered message type by wire tag (read-only).
WIRE_SPECS: Final[Mapping[str, WireSpec]] = MappingProxyType(_BY_TAG)


# --- values -------------------------------------------------------------------------------


def _default(obj: object) -> msgpack.ExtType:
    """msgpack's hook for types it does not know: Decimal, and nothing else."""
    if isinstance(obj, Decimal):
        if not obj.is_finite():
            raise InvalidMessage(f"cannot encode non-finite Decimal {obj}")
        return msgpack.ExtType(DECIMAL_EXT, str(obj).encode("ascii"))
    raise InvalidMessage(f"cannot encode {type(obj).__name__} {obj!r}")


def _ext_hook(code: int, data: bytes) -> Decimal:
    if code != DECIMAL_EXT:
        raise DecodeError(f"unknown msgpack ext type {code}")
    try:
        text = data.decode("ascii")
        value = Decimal(text)
    except (UnicodeDecodeError, ArithmeticError, ValueError) as exc:
        raise DecodeError(f"Decimal ext holds {data[:40]!r}, not a number") from exc
    # Canonical form only: one value has one encoding, and whitespace/underscores/NaN are out.
    if not value.is_finite() or str(value) != text:
        raise DecodeError(f"Decimal ext holds {text[:40]!r}, not a finite canonical Decimal")
    return value


def _unpack(data: bytes | bytearray | memoryview) -> object:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, ext_hook=_ext_hook)
    except DecodeError:
        raise
    except msgpack.ExtraData as exc:
        raise DecodeError(f"trailing bytes: {len(exc.extra)} after a complete value") from exc
    except Exception as exc:  # msgpack raises ValueError and friends; any is malformed input
        raise DecodeError(f"truncated or malformed msgpack: {exc}") from exc


# --- messages -----------------------------------------------------------------------------


def encode(msg: Message) -> bytes:
    """Encode a registered message as ``[tag, version, {field: value}]`` msgpack bytes.

    Raises:
        InvalidMessage: ``msg`` is not an instance of a registered message class (subclasses
            are not), or holds an int outside msgpack's range.
    """
    spec = _BY_CLASS.get(type(msg))
    if spec is None:
        raise InvalidMessage(f"cannot encode {type(msg).__name__}: not a registered message type")
    body = dict(zip(spec.fields, spec._getter(msg), strict=True))
    try:
        out: bytes = msgpack.packb(body, use_bin_type=True, default=_default)
    except (OverflowError, ValueError) as exc:  # e.g. ts_ns beyond uint64: check_ts has no cap
        raise InvalidMessage(f"cannot encode {spec.tag}: {exc}") from exc
    return spec._header + out


def decode(data: bytes | bytearray | memoryview) -> Message:
    """Decode bytes made by :func:`encode` back into an equal, validated message.

    Raises:
        DecodeError: for any bytes that are not exactly one valid message of a known tag and
            version; the message says what was wrong. Validation errors are chained.
    """
    obj = _unpack(data)
    if type(obj) is not list or len(obj) != 3:
        raise DecodeError(f"expected a [tag, version, fields] array, got {_brief(obj)}")
    tag, version, body = obj
    spec = _BY_TAG.get(tag) if type(tag) is str else None
    if spec is None:
        raise DecodeError(f"unknown message tag {_brief(tag)}")
    if type(version) is not int or version != spec.version:
        raise DecodeError(
            f"{tag} schema version {_brief(version)} not supported (expected {spec.version})"
        )
    if type(body) is not dict:
        raise DecodeError(f"{tag} fields must be a map, got {_brief(body)}")
    if body.keys() != spec._field_set:
        missing = sorted(spec._field_set - body.keys())
        extra = sorted(map(repr, body.keys() - spec._field_set))
        parts = [f"missing {', '.join(missing)}"] if missing else []
        parts += [f"unexpected {', '.join(extra)}"] if extra else []
        raise DecodeError(f"{tag} fields: {'; '.join(parts)}")
    for name, value in body.items():
        if type(value) is float:
            raise DecodeError(f"{tag} field {name} is a float ({value!r}); floats are refused")
    for name, members in spec._enums:
        value = body[name]
        if type(value) is str and value in members:
            body[name] = members[value]
        # else: left as is for the class's own check to reject with its own message
    try:
        return spec.cls(**body)
    except InputError as exc:
        raise DecodeError(f"invalid {tag}: {exc}") from exc


def _brief(value: object) -> str:
    return _clip(repr(value))


def _clip(text: str) -> str:
    return text if len(text) <= 60 else f"{text[:57]}..."


# --- snapshot state -------------------------------------------------------------------------


_SCALARS: Final = frozenset({str, bool, type(None)})


def _state_ok(root: dict[Any, Any]) -> bool:
    """Whether :func:`_check_state` would accept ``root`` (a dict): the fast path.

    The same checks without building a path for every value (most of a checkpoint's encoding
    time went there); :func:`_check_state` runs again, to name the problem, only on a refusal.
    """
    scalars = _SCALARS
    stack: list[tuple[Any, int]] = [(root, 0)]
    pop, push = stack.pop, stack.append
    while stack:
        container, depth = pop()
        if depth >= MAX_STATE_DEPTH:
            return False
        if type(container) is dict:
            for key in container:
                if type(key) is not str:
                    return False
            values = container.values()
        else:
            values = container
        for value in values:
            kind = type(value)
            if kind in scalars:
                continue
            if kind is int:
                if not _MIN_INT <= value <= _MAX_INT:
                    return False
            elif kind is dict or kind is list:
                push((value, depth + 1))
            elif kind is Decimal:
                if not value.is_finite():
                    return False
            else:
                return False
    return True


def _check_state(root: object, error: type[InputError]) -> None:
    """Raise ``error`` unless ``root`` is a dict of exactly the :data:`StateValue` types.

    Iterative, and bounds the depth itself: msgpack packs 1,024 levels that it cannot unpack.
    """
    if type(root) is dict and _state_ok(root):
        return
    _explain_state(root, error)
    raise AssertionError(f"state refused by the fast check only: {_brief(root)}")


def _explain_state(root: object, error: type[InputError]) -> None:
    """:func:`_check_state` the slow way: raise ``error`` naming the first problem found."""
    if type(root) is not dict:
        raise error(f"state must be a dict, got {type(root).__name__}")
    stack: list[tuple[object, str, int]] = [(root, "$", 0)]
    while stack:
        value, path, depth = stack.pop()
        if type(value) is dict or type(value) is list:
            if depth >= MAX_STATE_DEPTH:
                raise error(f"state nests deeper than {MAX_STATE_DEPTH} levels at {_clip(path)}")
            if type(value) is dict:
                for key, item in value.items():
                    if type(key) is not str:
                        raise error(f"state key at {_clip(path)} must be a str, got {_brief(key)}")
                    stack.append((item, f"{path}.{key}", depth + 1))
            else:
                stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))
        elif type(value) is int:
            if not _MIN_INT <= value <= _MAX_INT:
                raise error(f"state int at {_clip(path)} is out of the msgpack range: {value}")
        elif type(value) is Decimal:
            if not value.is_finite():
                raise error(f"state Decimal at {_clip(path)} must be finite, got {value}")
        elif type(value) is float:
            raise error(f"state value at {_clip(path)} is a float ({value!r}); floats are refused")
        elif not (value is None or type(value) is bool or type(value) is str):
            raise error(f"state value at {_clip(path)} has unsupported type {type(value).__name__}")


def encode_state(state: dict[str, StateValue]) -> bytes:
    """Encode a snapshot dict as msgpack bytes (Decimals exact, no tag or version).

    Raises:
        InvalidMessage: the dict holds a float, a tuple, a subclass (e.g. an enum), a non-str
            key, a non-finite Decimal, an int outside msgpack's range, or nests deeper than
            :data:`MAX_STATE_DEPTH`.
    """
    _check_state(state, InvalidMessage)
    out: bytes = msgpack.packb(state, use_bin_type=True, default=_default)
    return out


def decode_state(data: bytes | bytearray | memoryview) -> dict[str, StateValue]:
    """Decode bytes made by :func:`encode_state`.

    Raises:
        DecodeError: for anything but one msgpack map of :data:`StateValue` types.
    """
    state = _unpack(data)
    _check_state(state, DecodeError)
    return typing.cast(dict[str, StateValue], state)
