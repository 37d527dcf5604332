"""Commands: valid examples construct; each bad field value raises its exact error."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from messages import (
    CancelOrder,
    ClosePosition,
    CrashProfile,
    InvalidAmount,
    InvalidMessage,
    OpenPosition,
    OrderType,
    PlaceOrder,
    PriceTick,
    StartGrid,
)
from tests.messages.examples import (
    amount_cases,
    build,
    count_cases,
    enum_cases,
    id_cases,
    params,
    price_cases,
)

CASES = [
    *params(
        OpenPosition,
        [
            *id_cases("profile_id"),
            *id_cases("signal_id"),
            *id_cases("symbol"),
            *id_cases("position_id"),
            *amount_cases("qty", positive=True),
            *price_cases("limit_price"),
            *amount_cases("estimate", positive=True),
        ],
    ),
    *params(
        ClosePosition,
        [
            *id_cases("profile_id"),
            *id_cases("signal_id"),
            *id_cases("symbol"),
            *id_cases("position_id"),
            *amount_cases("qty", positive=True),
            *price_cases("limit_price"),
        ],
    ),
    *params(
        StartGrid,
        [
            *id_cases("profile_id"),
            *id_cases("symbol"),
            *price_cases("increment"),
            *price_cases("target_spread"),
            *count_cases("active_orders", positive=True),
            *amount_cases("budget_base"),
            *amount_cases("budget_quote"),
            # Prices that are fine alone but not in their order: see test_start_grid_order.
            *[c for c in price_cases("center_price") if "positive" not in c[3]],
            *[c for c in price_cases("min_price") if "positive" not in c[3]],
            *[c for c in price_cases("max_price") if "positive" not in c[3]],
        ],
    ),
    *params(
        PlaceOrder,
        [
            *id_cases("profile_id"),
            *id_cases("client_order_id"),
            *id_cases("symbol"),
            *enum_cases("side", "Side", "hold"),
            *amount_cases("qty", positive=True),
            *price_cases("price"),
            *enum_cases("order_type", "OrderType", "stop"),
        ],
    ),
    *params(
        CancelOrder,
        [
            *id_cases("profile_id"),
            *id_cases("client_order_id"),
            *id_cases("exchange_order_id", optional=True),
        ],
    ),
    *params(PriceTick, [*id_cases("symbol"), *price_cases("price")]),
    *params(CrashProfile, id_cases("profile_id")),
]


@pytest.mark.parametrize(("cls", "name", "value", "error", "pattern"), CASES)
def test_bad_field_is_rejected_exactly(cls, name, value, error, pattern):
    with pytest.raises(error, match=pattern):
        build(cls, **{name: value})


@pytest.mark.parametrize(
    "cls",
    [OpenPosition, ClosePosition, StartGrid, PlaceOrder, CancelOrder, PriceTick, CrashProfile],
)
def test_example_is_valid_frozen_and_keyword_only(cls):
    msg = build(cls)
    assert msg == build(cls)
    assert cls.__match_args__ == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.message_id = "other"
    with pytest.raises(TypeError):
        cls("m-1", 1)


def test_optional_fields_accept_none():
    assert build(OpenPosition, limit_price=None, estimate=None).limit_price is None
    assert build(ClosePosition, qty=None, limit_price=None).qty is None
    assert build(CancelOrder, exchange_order_id=None).exchange_order_id is None
    assert build(CancelOrder, correlation_id=None).correlation_id is None


def test_place_order_price_matches_its_type():
    market = build(PlaceOrder, order_type=OrderType.MARKET, price=None)
    assert market.order_type is OrderType.MARKET
    with pytest.raises(InvalidMessage, match=r"^a limit order needs a price, got None$"):
        build(PlaceOrder, order_type=OrderType.LIMIT, price=None)
    with pytest.raises(InvalidMessage, match=r"^a market order takes no price, got 43250\.50$"):
        build(PlaceOrder, order_type=OrderType.MARKET)


def test_order_type_is_a_str_enum_spelled_like_ccxt():
    assert [t.value for t in OrderType] == ["limit", "market"]
    assert OrderType("limit") is OrderType.LIMIT


def test_start_grid_order():
    with pytest.raises(InvalidMessage, match=r"^min_price 0\.02 must be below max_price 0\.02$"):
        build(StartGrid, min_price=Decimal("0.02"))
    with pytest.raises(
        InvalidMessage, match=r"^center_price 0\.03 must lie within \[0\.005, 0\.02\]$"
    ):
        build(StartGrid, center_price=Decimal("0.03"))
    with pytest.raises(
        InvalidMessage, match=r"^center_price 0\.001 must lie within \[0\.005, 0\.02\]$"
    ):
        build(StartGrid, center_price=Decimal("0.001"))
    # the bounds themselves are allowed
    assert build(StartGrid, center_price=Decimal("0.005")).center_price == Decimal("0.005")
    assert build(StartGrid, center_price=Decimal("0.02")).center_price == Decimal("0.02")


@pytest.mark.parametrize("name", ["center_price", "min_price", "max_price"])
def test_start_grid_prices_must_be_positive(name):
    with pytest.raises(InvalidAmount, match=rf"^{name} must be positive, got -1$"):
        build(StartGrid, **{name: Decimal(-1)})


def test_start_grid_increment_below_one_and_budget_not_empty():
    with pytest.raises(InvalidAmount, match=r"^increment must be below 1, got 1$"):
        build(StartGrid, increment=Decimal(1))
    assert build(StartGrid, increment=Decimal("0.999")).increment == Decimal("0.999")
    with pytest.raises(InvalidAmount, match=r"^budget_base and budget_quote are both 0$"):
        build(StartGrid, budget_base=0, budget_quote=0)
    assert build(StartGrid, budget_base=0).budget_quote > 0
    assert build(StartGrid, budget_quote=0).budget_base > 0
