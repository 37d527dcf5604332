"""Plain-data form of the position ledger, for the msgpack snapshot codec.

Only ``str`` keys and ``int``/``str``/``bool``/``None``/``list``/``dict`` values: prices and
rates travel as ``Decimal`` strings, collections as lists sorted by id so the same books always
give the same bytes. Decoding validates everything and raises ``InvalidMessage`` (or its
``InvalidAmount`` subclass) on malformed data; it never guesses a default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from accounting.position_records import PendingOrder, Position
from messages import Asset, InvalidMessage, Market, Side

#: Version of the layout below; bump it (and decode old versions) when the layout changes.
STATE_VERSION = 1

_LEDGER_KEYS = frozenset(
    {
        "version",
        "profile_id",
        "quote",
        "markets",
        "max_fee_rate",
        "allocated_capital",
        "reserved_for_orders",
        "reserved_for_positions",
        "realized_pnl",
        "fees_paid",
        "halt_reason",
        "orders",
        "positions",
        "used_order_ids",
        "applied_trade_ids",
    }
)
_ORDER_KEYS = frozenset(
    {
        "client_order_id",
        "symbol",
        "side",
        "position_id",
        "qty",
        "limit_price",
        "reserved",
        "filled_qty",
    }
)
_POSITION_KEYS = frozenset({"position_id", "symbol", "qty", "cost"})
_ASSET_KEYS = frozenset({"symbol", "precision"})
_MARKET_KEYS = frozenset({"symbol", "base", "quote"})


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerState:
    """A decoded, type-checked ledger state; the ledger checks that its books add up."""

    profile_id: str
    quote: Asset
    markets: dict[str, Market]
    max_fee_rate: Decimal
    allocated_capital: int
    reserved_for_orders: int
    reserved_for_positions: int
    realized_pnl: int
    fees_paid: int
    halt_reason: str | None
    orders: list[PendingOrder]
    positions: list[Position]
    used_order_ids: set[str]
    applied_trade_ids: set[str]


def asset_to_state(asset: Asset) -> dict[str, Any]:
    """An asset as plain data."""
    return {"symbol": asset.symbol, "precision": asset.precision}


def market_to_state(market: Market) -> dict[str, Any]:
    """A market as plain data."""
    return {
        "symbol": market.symbol,
        "base": asset_to_state(market.base),
        "quote": asset_to_state(market.quote),
    }


def order_to_state(order: PendingOrder) -> dict[str, Any]:
    """A pending order as plain data (the limit price as a Decimal string or ``None``)."""
    return {
        "client_order_id": order.client_order_id,
        "symbol": order.symbol,
        "side": order.side.value,
        "position_id": order.position_id,
        "qty": order.qty,
        "limit_price": None if order.limit_price is None else str(order.limit_price),
        "reserved": order.reserved,
        "filled_qty": order.filled_qty,
    }


def position_to_state(position: Position) -> dict[str, Any]:
    """An open position as plain data."""
    return {
        "position_id": position.position_id,
        "symbol": position.symbol,
        "qty": position.qty,
        "cost": position.cost,
    }


def decode_ledger_state(data: object) -> LedgerState:
    """Decode and type-check the output of ``PositionLedger.to_state``.

    Raises:
        InvalidMessage: a key is missing or extra, a value has the wrong type or range, or an
            id repeats.
    """
    d = _fields(data, keys=_LEDGER_KEYS, what="ledger state")
    if d["version"] != STATE_VERSION or isinstance(d["version"], bool):
        raise InvalidMessage(f"ledger state version must be {STATE_VERSION}, got {d['version']!r}")
    markets = [_market(m) for m in _list(d["markets"], name="markets")]
    orders = [_order(o) for o in _list(d["orders"], name="orders")]
    positions = [_position(p) for p in _list(d["positions"], name="positions")]
    _unique([m.symbol for m in markets], name="markets")
    _unique([o.client_order_id for o in orders], name="orders")
    _unique([p.position_id for p in positions], name="positions")
    halt_reason = d["halt_reason"]
    if halt_reason is not None and (not isinstance(halt_reason, str) or not halt_reason):
        raise InvalidMessage(f"halt_reason must be a non-empty str or None, got {halt_reason!r}")
    return LedgerState(
        profile_id=d["profile_id"],
        quote=_asset(d["quote"]),
        markets={m.symbol: m for m in markets},
        max_fee_rate=_decimal(d["max_fee_rate"], name="max_fee_rate"),
        allocated_capital=d["allocated_capital"],
        reserved_for_orders=d["reserved_for_orders"],
        reserved_for_positions=d["reserved_for_positions"],
        realized_pnl=d["realized_pnl"],
        fees_paid=d["fees_paid"],
        halt_reason=halt_reason,
        orders=orders,
        positions=positions,
        used_order_ids=set(_ids(d["used_order_ids"], name="used_order_ids")),
        applied_trade_ids=set(_ids(d["applied_trade_ids"], name="applied_trade_ids")),
    )


def _fields(data: object, *, keys: frozenset[str], what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise InvalidMessage(f"{what} must be a dict, got {type(data).__name__}")
    if set(data) != keys:
        got = sorted(map(repr, data))
        raise InvalidMessage(f"{what} must have the keys {sorted(keys)}, got [{', '.join(got)}]")
    return data


def _list(value: object, *, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidMessage(f"{name} must be a list, got {type(value).__name__}")
    return value


def _ids(value: object, *, name: str) -> list[str]:
    ids = _list(value, name=name)
    for item in ids:
        if not isinstance(item, str) or not item:
            raise InvalidMessage(f"{name} must hold non-empty strings, got {item!r}")
    return _unique(ids, name=name)


def _unique(ids: list[str], *, name: str) -> list[str]:
    if len(set(ids)) != len(ids):
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        raise InvalidMessage(f"{name} repeat the ids {repeated}")
    return ids


def _decimal(value: object, *, name: str) -> Decimal:
    if not isinstance(value, str):
        raise InvalidMessage(f"{name} must be a Decimal string, got {value!r}")
    try:
        return Decimal(value)
    except InvalidOperation as exc:
        raise InvalidMessage(f"{name} {value!r} is not a Decimal") from exc


def _asset(data: object) -> Asset:
    d = _fields(data, keys=_ASSET_KEYS, what="asset")
    return Asset(symbol=d["symbol"], precision=d["precision"])


def _market(data: object) -> Market:
    d = _fields(data, keys=_MARKET_KEYS, what="market")
    return Market(symbol=d["symbol"], base=_asset(d["base"]), quote=_asset(d["quote"]))


def _order(data: object) -> PendingOrder:
    d = _fields(data, keys=_ORDER_KEYS, what="order")
    if not isinstance(d["side"], str) or d["side"] not in {s.value for s in Side}:
        raise InvalidMessage(f"order side must be 'buy' or 'sell', got {d['side']!r}")
    limit = d["limit_price"]
    return PendingOrder(
        client_order_id=d["client_order_id"],
        symbol=d["symbol"],
        side=Side(d["side"]),
        position_id=d["position_id"],
        qty=d["qty"],
        limit_price=None if limit is None else _decimal(limit, name="limit_price"),
        reserved=d["reserved"],
        filled_qty=d["filled_qty"],
    )


def _position(data: object) -> Position:
    d = _fields(data, keys=_POSITION_KEYS, what="position")
    return Position(position_id=d["position_id"], symbol=d["symbol"], qty=d["qty"], cost=d["cost"])
