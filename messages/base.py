"""What every capflow message shares: ids for tracing, an integer-nanosecond timestamp."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeVar

from messages.errors import InvalidMessage

MAX_ID_LENGTH = 200

E = TypeVar("E", bound=enum.Enum)


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
