"""Field checks shared by commands and events (ids, money and enums live in base/money)."""

from __future__ import annotations

import re

from messages.base import check_id
from messages.errors import InvalidMessage
from messages.money import MAX_UNITS

MAX_TEXT_LENGTH = 2000
MAX_CODE_LENGTH = 64
_CODE = re.compile(r"[a-z][a-z0-9_]*", re.ASCII)


def check_count(value: object, *, name: str, allow_zero: bool = True) -> int:
    """Return ``value`` if it is a non-negative (or positive) int count, not a bool."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidMessage(f"{name} must be an int count, got {type(value).__name__} {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidMessage(f"{name} must be {bound}, got {value}")
    if value > MAX_UNITS:
        raise InvalidMessage(f"{name} {value} exceeds {MAX_UNITS}")
    return value


def check_text(value: object, *, name: str) -> str:
    """Return ``value`` if it is a non-empty human-readable string of bounded length."""
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT_LENGTH:
        raise InvalidMessage(
            f"{name} must be a non-empty string of <= {MAX_TEXT_LENGTH} chars, got {value!r}"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidMessage(f"{name} must be valid unicode text, got {value!r}") from None
    return value


def check_code(value: object, *, name: str) -> str:
    """Return ``value`` if it is a reason code like ``"insufficient_capital"``."""
    if not isinstance(value, str) or len(value) > MAX_CODE_LENGTH or not _CODE.fullmatch(value):
        raise InvalidMessage(
            f"{name} must be a lower_snake_case code of <= {MAX_CODE_LENGTH} chars, got {value!r}"
        )
    return value


def check_bool(value: object, *, name: str) -> bool:
    """Return ``value`` if it is exactly ``True`` or ``False`` (not 0/1)."""
    if not isinstance(value, bool):
        raise InvalidMessage(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def check_optional_id(value: object, *, name: str) -> str | None:
    """``None``, or an id as :func:`messages.base.check_id` accepts it."""
    return None if value is None else check_id(value, name=name)
