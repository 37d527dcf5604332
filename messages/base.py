"""What every capflow message shares: ids for tracing, an integer-nanosecond timestamp."""

from __future__ import annotations

import enum
from dataclasses import MISSING, dataclass, fields
from typing import Any, TypeVar

from messages.errors import InvalidMessage

MAX_ID_LENGTH = 200

E = TypeVar("E", bound=enum.Enum)
T = TypeVar("T")


class Side(enum.StrEnum):
    """Order side, spelled as ccxt spells it."""

    BUY = "buy"
    SELL = "sell"

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


def check_id(value: object, *, name: str) -> str:
    """Return ``value`` if it is a non-empty printable id string, else raise InvalidMessage."""
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise InvalidMessage(
            f"{name} must be a non-empty string of <= {MAX_ID_LENGTH} chars, got {value!r}"
        )
    if not value.isprintable():
        raise InvalidMessage(f"{name} must be printable, got {value!r}")
    return value


def check_ts(value: object, *, name: str = "ts_ns") -> int:
    """Return ``value`` if it is a non-negative int timestamp in nanoseconds."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise InvalidMessage(f"{name} must be an int of nanoseconds in [0, 2**63), got {value!r}")
    return value


def check_enum(value: object, enum_type: type[E], *, name: str) -> E:
    """Return ``value`` if it is a member of ``enum_type``."""
    if not isinstance(value, enum_type):
        raise InvalidMessage(f"{name} must be a {enum_type.__name__}, got {value!r}")
    return value


#: Per dataclass: its fields in order, each with its default (``MISSING`` if it has none).
_FIELDS: dict[type, tuple[tuple[str, Any], ...]] = {}


def _field_defaults(cls: type) -> tuple[tuple[str, Any], ...]:
    spec = _FIELDS.get(cls)
    if spec is None:
        spec = _FIELDS[cls] = tuple((f.name, f.default) for f in fields(cls))
    return spec


def trusted(cls: type[T], /, **values: Any) -> T:
    """Build a frozen dataclass from values that are already valid, skipping ``__post_init__``.

    Validate at the boundary, not inside: a record or event that capflow builds from values
    it validated when they came in (a ``Fill``'s fields, a ledger's own records) need not be
    checked again, and re-checking them cost more than the bookkeeping itself
    (``docs/performance.md``, section 3). Never use it for input from outside capflow: that
    goes through the class's own constructor. Fields not given take their defaults.

    Raises:
        TypeError: a field without a default is missing, or a name is not a field.
    """
    obj = object.__new__(cls)
    given = 0
    for name, default in _field_defaults(cls):
        if name in values:
            value = values[name]
            given += 1
        elif default is MISSING:
            raise TypeError(f"{cls.__name__} needs {name}")
        else:
            value = default
        object.__setattr__(obj, name, value)
    if given != len(values):
        raise TypeError(f"{cls.__name__} has no fields {sorted(set(values) - set(_names(cls)))}")
    return obj


def trusted_replace(obj: T, /, **changes: Any) -> T:
    """``dataclasses.replace`` without ``__post_init__``, for changes computed from valid values.

    The caller answers for the new values (see :func:`trusted`); the invariant checks of the
    books that hold the record still run.

    Raises:
        TypeError: a name is not a field.
    """
    cls = type(obj)
    new = object.__new__(cls)
    given = 0
    for name, _ in _field_defaults(cls):
        if name in changes:
            object.__setattr__(new, name, changes[name])
            given += 1
        else:
            object.__setattr__(new, name, getattr(obj, name))
    if given != len(changes):
        raise TypeError(f"{cls.__name__} has no fields {sorted(set(changes) - set(_names(cls)))}")
    return new


def _names(cls: type) -> list[str]:
    return [name for name, _ in _field_defaults(cls)]


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """Base of every command and event.

    Attributes:
        message_id: unique id of this message (dedupe key for commands).
        ts_ns: when it was created, integer nanoseconds since the epoch.
        correlation_id: id of the message or signal that caused this one, if any.
    """

    message_id: str
    ts_ns: int
    correlation_id: str | None = None

    def __post_init__(self) -> None:
        check_id(self.message_id, name="message_id")
        check_ts(self.ts_ns)
        if self.correlation_id is not None:
            check_id(self.correlation_id, name="correlation_id")
