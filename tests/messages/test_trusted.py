"""``trusted`` / ``trusted_replace``: the constructor's result for valid values, without its checks.

They are for values capflow validated already; the tests pin that they build exactly what the
validating constructor builds, fill in defaults, refuse unknown or missing fields, and that the
public constructors still validate.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import pytest

from accounting.position_records import PendingOrder, Position
from messages import FillApplied, InvalidAmount, InvalidMessage, Side, trusted, trusted_replace

FIELDS: dict[str, Any] = {
    "message_id": "p1:1",
    "ts_ns": 5,
    "profile_id": "p1",
    "trade_id": "t-1",
    "client_order_id": "e-1",
    "qty": 3,
    "duplicate": False,
}


def test_trusted_builds_what_the_constructor_builds_with_defaults():
    built = trusted(FillApplied, **FIELDS)
    assert built == FillApplied(**FIELDS)
    assert built.correlation_id is None
    assert type(built) is FillApplied
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.qty = 4  # type: ignore[misc]


def test_trusted_refuses_missing_and_unknown_fields():
    without_qty = {k: v for k, v in FIELDS.items() if k != "qty"}
    with pytest.raises(TypeError, match=r"^FillApplied needs qty$"):
        trusted(FillApplied, **without_qty)
    with pytest.raises(TypeError, match=r"^FillApplied has no fields \['size'\]$"):
        trusted(FillApplied, **FIELDS, size=1)


def test_trusted_replace_is_replace_for_valid_values():
    order = PendingOrder(
        client_order_id="e-1",
        symbol="BTC/USDT",
        side=Side.BUY,
        position_id="pos-1",
        qty=10,
        limit_price=Decimal("3"),
        reserved=30,
    )
    assert trusted_replace(order, filled_qty=4, reserved=18) == dataclasses.replace(
        order, filled_qty=4, reserved=18
    )
    assert order.filled_qty == 0  # the original is untouched
    position = Position(position_id="pos-1", symbol="BTC/USDT", qty=1, cost=2)
    with pytest.raises(TypeError, match=r"^Position has no fields \['price'\]$"):
        trusted_replace(position, price=1)


def test_the_public_constructors_still_validate():
    with pytest.raises(InvalidAmount):
        FillApplied(**{**FIELDS, "qty": 0})
    with pytest.raises(InvalidMessage):
        FillApplied(**{**FIELDS, "trade_id": ""})
    order = PendingOrder(
        client_order_id="e-1",
        symbol="BTC/USDT",
        side=Side.BUY,
        position_id="pos-1",
        qty=10,
        limit_price=None,
        reserved=30,
    )
    with pytest.raises(InvalidAmount):
        dataclasses.replace(order, filled_qty=10)
