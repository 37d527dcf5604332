"""Hypothesis strategies for every message type; an exact (type- and exponent-aware) equality."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from messages import (
    MAX_UNITS,
    BootstrapCompleted,
    BootstrapStarted,
    CancelOrder,
    ClosePosition,
    CrashProfile,
    DeadLettered,
    Fill,
    FillApplied,
    FillRejected,
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

# str.isprintable() is False for the "Other" and "Separator" categories, except the ASCII space.
_PRINTABLE = st.characters(
    exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"), include_characters=" "
)
ids = st.one_of(
    st.text(_PRINTABLE, min_size=1, max_size=24),
    st.text(_PRINTABLE, min_size=190, max_size=200),
).filter(str.isprintable)
optional_ids = st.none() | ids
texts = st.text(min_size=1, max_size=80)
codes = st.from_regex(r"[a-z][a-z0-9_]{0,63}", fullmatch=True)
timestamps = st.integers(0, 2**63 - 1)
units = st.integers(0, MAX_UNITS)
positive_units = st.integers(1, MAX_UNITS)
sides = st.sampled_from(Side)


@st.composite
def _decimal_from_digits(draw: st.DrawFn, *, max_digits: int = 30) -> Decimal:
    digits = draw(st.lists(st.integers(0, 9), min_size=1, max_size=max_digits))
    if not any(digits):
        digits[-1] = draw(st.integers(1, 9))
    significant = len(str(int("".join(map(str, digits)))))
    # check_price bounds prices to 1e-30 <= p < 1e30 (adjusted exponent in [-30, 30)).
    return Decimal((0, tuple(digits), draw(st.integers(-30, 30 - significant))))


#: Positive finite Decimals of every shape, trailing zeros (exponents) included.
prices = st.one_of(
    st.sampled_from([Decimal(s) for s in ("1.10", "43250.50", "1E+2", "100", "0.00000001")]),
    _decimal_from_digits(),
)
optional_prices = st.none() | prices


@st.composite
def _ratio_below_one(draw: st.DrawFn) -> Decimal:
    places = draw(st.integers(1, 12))
    n = draw(st.integers(1, 10**places - 1))
    return Decimal((0, tuple(int(c) for c in str(n)), -places))


def _base() -> dict[str, st.SearchStrategy[Any]]:
    return {"message_id": ids, "ts_ns": timestamps, "correlation_id": optional_ids}


def _message(cls: type[Message], **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries({**_base(), **fields}).map(lambda kw: cls(**kw))


@st.composite
def start_grids(draw: st.DrawFn) -> StartGrid:
    low, center, high = sorted(draw(st.lists(prices, min_size=3, max_size=3)))
    if low == high:
        high = high * 2
    budgets = draw(st.tuples(units, units).filter(lambda b: b != (0, 0)))
    return StartGrid(
        **draw(st.fixed_dictionaries(_base())),
        profile_id=draw(ids),
        symbol=draw(ids),
        center_price=center,
        increment=draw(_ratio_below_one()),
        target_spread=draw(prices),
        min_price=low,
        max_price=high,
        active_orders=draw(st.integers(1, 10_000)),
        budget_base=budgets[0],
        budget_quote=budgets[1],
    )


@st.composite
def place_orders(draw: st.DrawFn) -> PlaceOrder:
    order_type = draw(st.sampled_from(OrderType))
    return PlaceOrder(
        **draw(st.fixed_dictionaries(_base())),
        profile_id=draw(ids),
        client_order_id=draw(ids),
        symbol=draw(ids),
        side=draw(sides),
        qty=draw(positive_units),
        price=draw(prices) if order_type is OrderType.LIMIT else None,
        order_type=order_type,
    )


_ORDER_OR_SIGNAL: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.fixed_dictionaries({"client_order_id": ids, "signal_id": optional_ids}),
    st.fixed_dictionaries({"client_order_id": st.none(), "signal_id": ids}),
)


@st.composite
def reservation_rejections(draw: st.DrawFn) -> ReservationRejected:
    return ReservationRejected(
        **draw(st.fixed_dictionaries(_base())),
        **draw(_ORDER_OR_SIGNAL),
        profile_id=draw(ids),
        reason=draw(codes),
        needed=draw(units),
        available=draw(st.integers(-MAX_UNITS, MAX_UNITS)),
        detail=draw(texts),
    )


#: One strategy per message type; test_codec checks this covers exactly the registry.
STRATEGIES: dict[type[Message], st.SearchStrategy[Any]] = {
    OpenPosition: _message(
        OpenPosition,
        profile_id=ids,
        signal_id=ids,
        symbol=ids,
        position_id=ids,
        qty=positive_units,
        limit_price=optional_prices,
        estimate=st.none() | positive_units,
    ),
    ClosePosition: _message(
        ClosePosition,
        profile_id=ids,
        signal_id=ids,
        symbol=ids,
        position_id=ids,
        qty=st.none() | positive_units,
        limit_price=optional_prices,
    ),
    StartGrid: start_grids(),
    PlaceOrder: place_orders(),
    CancelOrder: _message(
        CancelOrder, profile_id=ids, client_order_id=ids, exchange_order_id=optional_ids
    ),
    PriceTick: _message(PriceTick, symbol=ids, price=prices),
    CrashProfile: _message(CrashProfile, profile_id=ids),
    Fill: _message(
        Fill,
        trade_id=ids,
        order_id=ids,
        client_order_id=ids,
        symbol=ids,
        side=sides,
        qty=positive_units,
        price=prices,
        cost=units,
        fee=units,
        fee_asset=ids,
        liquidity=st.sampled_from(Liquidity),
    ),
    OrderAccepted: _message(
        OrderAccepted,
        profile_id=optional_ids,
        client_order_id=ids,
        exchange_order_id=ids,
        symbol=ids,
        side=sides,
        qty=positive_units,
        price=optional_prices,
    ),
    OrderRejected: _message(
        OrderRejected, profile_id=optional_ids, client_order_id=ids, reason=texts
    ),
    OrderCanceled: _message(
        OrderCanceled,
        profile_id=optional_ids,
        client_order_id=ids,
        exchange_order_id=ids,
        remaining=units,
    ),
    BootstrapStarted: _message(BootstrapStarted, profile_id=ids),
    BootstrapCompleted: _message(BootstrapCompleted, profile_id=ids, replayed=units),
    ReservationRejected: reservation_rejections(),
    FillApplied: _message(
        FillApplied,
        profile_id=ids,
        trade_id=ids,
        client_order_id=ids,
        qty=positive_units,
        duplicate=st.booleans(),
    ),
    FillRejected: _message(
        FillRejected, profile_id=optional_ids, trade_id=ids, reason=codes, detail=texts
    ),
    InvariantViolated: _message(InvariantViolated, profile_id=ids, detail=texts),
    DeadLettered: _message(
        DeadLettered,
        profile_id=ids,
        seq=units,
        payload_type=ids,
        error=texts,
        attempts=st.integers(1, 100),
    ),
}

any_message = st.one_of(*STRATEGIES.values())

#: Snapshot state: exactly the types encode_state accepts.
state_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=20)
    | prices
    | prices.map(lambda d: -d),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
states = st.dictionaries(st.text(max_size=10), state_values, max_size=8)


def assert_identical(actual: object, expected: object, path: str = "$") -> None:
    """``actual == expected`` with the same types all the way down and Decimal exponents kept."""
    assert type(actual) is type(expected), f"{path}: {type(actual)} is not {type(expected)}"
    if isinstance(expected, Decimal):
        assert isinstance(actual, Decimal)
        assert actual.as_tuple() == expected.as_tuple(), f"{path}: {actual!r} != {expected!r}"
    elif isinstance(expected, dict):
        assert isinstance(actual, dict)
        assert list(actual) == list(expected), f"{path}: keys differ"
        for key, value in expected.items():
            assert_identical(actual[key], value, f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list)
        assert len(actual) == len(expected), f"{path}: lengths differ"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_identical(a, e, f"{path}[{i}]")
    elif isinstance(expected, Message):
        assert actual == expected
        for f in dataclasses.fields(expected):
            assert_identical(getattr(actual, f.name), getattr(expected, f.name), f"{path}.{f.name}")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"
