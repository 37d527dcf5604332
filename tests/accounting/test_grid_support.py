"""Shared builders for the grid tests (this module holds no tests).

The example grid used throughout (and in ``docs/accounting.md (part 2)``): BTS/USD, both assets
with precision 0, center 1, increment 1 %, spread 3 %, prices in [0.95, 1.05], 2 orders per
side, weight ratio 0.5, budgets 1500/1500. Ten levels; the spread gap is 2 slots and the
initial boundary is 4: slots 0-3 BUY, 4-5 SPREAD, 6-9 SELL. Ideal sizes, nearest the spread
first: 800, 400, 200, 100 on each side.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

from accounting.grid import GridConfig
from accounting.grid_funds import GridBook
from accounting.grid_planner import apply_plan, plan_rebalance
from accounting.grid_records import GridOrder, Placement
from messages import Asset, Fill, Market, Side

BTS = Asset(symbol="BTS", precision=0)
USD = Asset(symbol="USD", precision=0)
MARKET = Market(symbol="BTS/USD", base=BTS, quote=USD)

BASE_CONFIG = {
    "market": MARKET,
    "center_price": Decimal("1"),
    "increment": Decimal("0.01"),
    "target_spread": Decimal("0.03"),
    "min_price": Decimal("0.95"),
    "max_price": Decimal("1.05"),
    "active_orders": 2,
    "budget_base": 1500,
    "budget_quote": 1500,
    "price_decimals": 6,
    "weight_ratio": Decimal("0.5"),
}


def make_config(**overrides: Any) -> GridConfig:
    """The example config with ``overrides``."""
    return GridConfig(**{**BASE_CONFIG, **overrides})


def make_book(
    *, base_total: int = 1500, quote_total: int = 1500, profile_id: str = "p1", **overrides: Any
) -> GridBook:
    """A fresh book of the example grid (or of the config with ``overrides``)."""
    return GridBook.create(
        profile_id, make_config(**overrides), base_total=base_total, quote_total=quote_total
    )


def open_window(book: GridBook) -> list[Placement]:
    """Plan, apply and confirm the initial orders; exchange ids are ``"x" + client id``."""
    placements = [r for r in apply_plan(book, plan_rebalance(book)) if isinstance(r, Placement)]
    for placement in placements:
        book.confirm_placement(placement.client_order_id, "x" + placement.client_order_id)
    return placements


def order_on(book: GridBook, slot: int) -> GridOrder:
    """The order slot ``slot`` holds."""
    order_id = book.slots[slot].order_id
    assert order_id is not None, f"slot {slot} holds no order"
    return book.orders[order_id]


def make_fill(
    order: GridOrder,
    *,
    trade_id: str,
    qty: int,
    price: Decimal | None = None,
    cost: int | None = None,
    fee: int = 0,
    fee_asset: str | None = None,
    **overrides: Any,
) -> Fill:
    """A fill of ``qty`` on ``order`` at its limit (cost rounded down unless given)."""
    price = order.price if price is None else price
    if cost is None:
        cost = MARKET.cost_bounds(qty, price)[0]
    received = BTS if order.side is Side.BUY else USD
    fields: dict[str, Any] = {
        "message_id": f"m-{trade_id}",
        "ts_ns": 1,
        "trade_id": trade_id,
        "order_id": order.exchange_id or "x" + order.order_id,
        "client_order_id": order.order_id,
        "symbol": MARKET.symbol,
        "side": order.side,
        "qty": qty,
        "price": price,
        "cost": cost,
        "fee": fee,
        "fee_asset": received.symbol if fee_asset is None else fee_asset,
    }
    return Fill(**{**fields, **overrides})


def funds_row(book: GridBook, asset: str) -> dict[str, int]:
    """Every fund component of ``asset``, including ``available``."""
    funds = book.recalculate_funds()[asset]
    row = dataclasses.asdict(funds)
    del row["asset"]
    row["available"] = funds.available
    return row
