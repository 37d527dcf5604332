"""One valid instance per message type, and the standard bad values with their exact errors."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from messages import (
    BootstrapCompleted,
    BootstrapStarted,
    CancelOrder,
    ClosePosition,
    CrashProfile,
    DeadLettered,
    Fill,
    FillApplied,
    FillRejected,
    InvalidAmount,
    InvalidMessage,
    InvariantViolated,
    Liquidity,
    Message,
    OpenPosition,
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    OrderType,
    PlaceOrder,
    PriceTick,
    ReservationRejected,
    Side,
    StartGrid,
)

_BASE = {"message_id": "m-1", "ts_ns": 1_700_000_000_000_000_000, "correlation_id": "sig-1"}

#: Valid keyword arguments for each message type; tests replace one field at a time.
EXAMPLES: dict[type[Message], dict[str, Any]] = {
    OpenPosition: {
        "profile_id": "p1",
        "signal_id": "sig-1",
        "symbol": "BTC/USDT",
        "position_id": "pos-1",
        "qty": 1_000_000,
        "limit_price": Decimal("43250.50"),
        "estimate": 432_505_000,
    },
    ClosePosition: {
        "profile_id": "p1",
        "signal_id": "sig-2",
        "symbol": "BTC/USDT",
        "position_id": "pos-1",
        "qty": 500_000,
        "limit_price": Decimal("44000"),
    },
    StartGrid: {
        "profile_id": "g1",
        "symbol": "BTS/USDT",
        "center_price": Decimal("0.0100"),
        "increment": Decimal("0.01"),
        "target_spread": Decimal("0.03"),
        "min_price": Decimal("0.005"),
        "max_price": Decimal("0.02"),
        "active_orders": 5,
        "budget_base": 10_000_00000,
        "budget_quote": 100_000000,
    },
    PlaceOrder: {
        "profile_id": "p1",
        "client_order_id": "cf-p1-sig-1",
        "symbol": "BTC/USDT",
        "side": Side.BUY,
        "qty": 1_000_000,
        "price": Decimal("43250.50"),
        "order_type": OrderType.LIMIT,
    },
    CancelOrder: {"profile_id": "p1", "client_order_id": "cf-p1-sig-1", "exchange_order_id": "x1"},
    PriceTick: {"symbol": "BTC/USDT", "price": Decimal("43251.00")},
    CrashProfile: {"profile_id": "p1"},
    Fill: {
        "trade_id": "t-1",
        "order_id": "x1",
        "client_order_id": "cf-p1-sig-1",
        "symbol": "BTC/USDT",
        "side": Side.BUY,
        "qty": 1_000_000,
        "price": Decimal("43250.50"),
        "cost": 432_505_000,
        "fee": 432_505,
        "fee_asset": "USDT",
        "liquidity": Liquidity.TAKER,
    },
    OrderAccepted: {
        "profile_id": "p1",
        "client_order_id": "cf-p1-sig-1",
        "exchange_order_id": "x1",
        "symbol": "BTC/USDT",
        "side": Side.SELL,
        "qty": 1_000_000,
        "price": Decimal("43250.50"),
    },
    OrderRejected: {"profile_id": "p1", "client_order_id": "cf-p1-sig-1", "reason": "min notional"},
    OrderCanceled: {
        "profile_id": "p1",
        "client_order_id": "cf-p1-sig-1",
        "exchange_order_id": "x1",
        "remaining": 250_000,
    },
    BootstrapStarted: {"profile_id": "p1"},
    BootstrapCompleted: {"profile_id": "p1", "replayed": 29},
    ReservationRejected: {
        "profile_id": "p1",
        "client_order_id": None,
        "signal_id": "sig-3",
        "reason": "insufficient_capital",
        "needed": 500,
        "available": -20,
        "detail": "needs 500 units, 0 available",
    },
    FillApplied: {
        "profile_id": "p1",
        "trade_id": "t-1",
        "client_order_id": "cf-p1-sig-1",
        "qty": 1_000_000,
        "duplicate": False,
    },
    FillRejected: {
        "profile_id": None,
        "trade_id": "t-9",
        "reason": "unknown_order",
        "detail": "no order cf-p9-x in any profile",
    },
    InvariantViolated: {"profile_id": "p1", "detail": "available 5 != 4 + 0 + 0"},
    DeadLettered: {
        "profile_id": "p1",
        "seq": 17,
        "payload_type": "Fill",
        "error": "FundInvariantViolation: available 5 != 4 + 0 + 0",
        "attempts": 3,
    },
}


def build(cls: type[Message], **changes: Any) -> Any:
    """An instance of ``cls`` from its example, with ``changes`` applied."""
    return cls(**{**_BASE, **EXAMPLES[cls], **changes})


Case = tuple[str, object, type[Exception], str]


def id_cases(name: str, *, optional: bool = False) -> list[Case]:
    msg = rf"^{name} must be a non-empty string of <= 200 chars, got "
    cases: list[Case] = [
        (name, "", InvalidMessage, msg + "''$"),
        (name, "x" * 201, InvalidMessage, msg + f"'{'x' * 201}'$"),
        (name, 7, InvalidMessage, msg + "7$"),
        (name, "a\nb", InvalidMessage, rf"^{name} must be printable, got 'a\\nb'$"),
    ]
    if not optional:
        cases.append((name, None, InvalidMessage, msg + "None$"))
    return cases


def amount_cases(name: str, *, positive: bool = False, negative_ok: bool = False) -> list[Case]:
    msg = rf"^{name} must be an int of minor units, got "
    cases: list[Case] = [
        (name, 1.0, InvalidAmount, msg + r"float 1\.0$"),
        (name, float("nan"), InvalidAmount, msg + "float nan$"),
        (name, True, InvalidAmount, msg + "bool True$"),
        (name, Decimal(5), InvalidAmount, msg + r"Decimal Decimal\('5'\)$"),
        (name, "5", InvalidAmount, msg + "str '5'$"),
        (name, 2**63, InvalidAmount, rf"^{name} {2**63} exceeds the largest amount {2**63 - 1}$"),
    ]
    if not negative_ok:
        cases.append((name, -1, InvalidAmount, rf"^{name} must not be negative, got -1$"))
    if positive:
        cases.append((name, 0, InvalidAmount, rf"^{name} must be positive, got 0$"))
    return cases


def price_cases(name: str) -> list[Case]:
    return [
        (name, Decimal("NaN"), InvalidAmount, rf"^{name} must be finite, got NaN$"),
        (name, Decimal("sNaN"), InvalidAmount, rf"^{name} must be finite, got sNaN$"),
        (name, Decimal("Infinity"), InvalidAmount, rf"^{name} must be finite, got Infinity$"),
        (name, Decimal("-Infinity"), InvalidAmount, rf"^{name} must be finite, got -Infinity$"),
        (name, Decimal(0), InvalidAmount, rf"^{name} must be positive, got 0$"),
        (name, Decimal("-1.5"), InvalidAmount, rf"^{name} must be positive, got -1\.5$"),
        (name, 1.5, InvalidAmount, rf"^{name} must be a Decimal, got float 1\.5$"),
        (name, 2, InvalidAmount, rf"^{name} must be a Decimal, got int 2$"),
        (name, "1.5", InvalidAmount, rf"^{name} must be a Decimal, got str '1\.5'$"),
    ]


def count_cases(name: str, *, positive: bool = False) -> list[Case]:
    msg = rf"^{name} must be an int count, got "
    cases: list[Case] = [
        (name, 1.0, InvalidMessage, msg + r"float 1\.0$"),
        (name, True, InvalidMessage, msg + "bool True$"),
        (name, -1, InvalidMessage, rf"^{name} must be >= 0, got -1$"),
        (name, 2**63, InvalidMessage, rf"^{name} {2**63} exceeds {2**63 - 1}$"),
    ]
    if positive:
        cases[2] = (name, -1, InvalidMessage, rf"^{name} must be > 0, got -1$")
        cases.append((name, 0, InvalidMessage, rf"^{name} must be > 0, got 0$"))
    return cases


def enum_cases(name: str, enum_name: str, value: str) -> list[Case]:
    return [
        (name, value, InvalidMessage, rf"^{name} must be a {enum_name}, got '{value}'$"),
        (name, None, InvalidMessage, rf"^{name} must be a {enum_name}, got None$"),
    ]


def text_cases(name: str) -> list[Case]:
    msg = rf"^{name} must be a non-empty string of <= 2000 chars, got "
    return [
        (name, "", InvalidMessage, msg + "''$"),
        (name, 1.5, InvalidMessage, msg + r"1\.5$"),
        (name, "x" * 2001, InvalidMessage, msg + f"'{'x' * 2001}'$"),
        (name, "\ud800", InvalidMessage, rf"^{name} must be valid unicode text, got '\\ud800'$"),
    ]


def code_cases(name: str) -> list[Case]:
    msg = rf"^{name} must be a lower_snake_case code of <= 64 chars, got "
    return [
        (name, "", InvalidMessage, msg + "''$"),
        (name, "Insufficient", InvalidMessage, msg + "'Insufficient'$"),
        (name, "no money", InvalidMessage, msg + "'no money'$"),
        (name, "a" * 65, InvalidMessage, msg + f"'{'a' * 65}'$"),
        (name, "ok\n", InvalidMessage, msg + r"'ok\\n'$"),
    ]


def base_cases() -> list[Case]:
    """What every message rejects in the fields of :class:`messages.Message`."""
    ts = r"^ts_ns must be an int of nanoseconds in \[0, 2\*\*63\), got "
    return [
        *id_cases("message_id"),
        *id_cases("correlation_id", optional=True),
        ("ts_ns", -1, InvalidMessage, ts + "-1$"),
        ("ts_ns", True, InvalidMessage, ts + "True$"),
        ("ts_ns", 1.0, InvalidMessage, ts + r"1\.0$"),
    ]


def params(cls: type[Message], cases: list[Case]) -> list[tuple[Any, ...]]:
    """pytest parameters ``(cls, field, value, error, pattern)`` with readable ids."""
    return [
        pytest.param(cls, name, value, error, pattern, id=f"{cls.__name__}.{name}={value!r:.20}")
        for name, value, error, pattern in [*base_cases(), *cases]
    ]
