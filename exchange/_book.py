"""The simulated exchange's books: one account, the house, orders and trades, exactly.

Pure bookkeeping (no threads, no randomness, no clock): :class:`exchange.SimulatedExchange`
decides *what* happens and calls the :class:`Book` to move the units. Every movement is between
the account and the house, so per asset ``free + used + house == supply`` always holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from exchange.base import Balance, Fee, Order, OrderStatus, OrderType, TakerOrMaker, Trade
from messages import (
    Asset,
    FundInvariantViolation,
    InvalidConfig,
    Market,
    Rounding,
    Side,
    check_id,
    check_units,
    fee_for,
)


@dataclass(slots=True, kw_only=True)
class OrderRecord:
    """The exchange's mutable record of one order (rendered as an :class:`Order`)."""

    id: str
    client_order_id: str
    timestamp: int
    symbol: str
    type: OrderType
    side: Side
    price: Decimal  # limit price; for a market order, the price it was placed (and filled) at
    amount: int
    filled: int = 0
    cost: int = 0
    fee: int = 0
    status: OrderStatus = "open"
    lock: int = 0  # units of the locked asset (buy: quote, sell: base) still held
    last_trade_timestamp: int | None = None
    trade_ids: list[str] = field(default_factory=list)


def copy_trade(trade: Trade) -> Trade:
    """A copy that shares nothing mutable with ``trade``."""
    copied = trade.copy()
    copied["fee"] = trade["fee"].copy()
    return copied


def lock_for(market: Market, side: Side, qty: int, price: Decimal) -> tuple[str, int]:
    """The asset and units an open order of ``qty`` at ``price`` must lock."""
    if side is Side.BUY:
        return market.quote.symbol, market.notional(qty, price, Rounding.UP)
    return market.base.symbol, qty


class Book:
    """The account (free/used), the house, and the record of orders and trades."""

    def __init__(self, markets: Mapping[str, Market], balances: Mapping[str, int]) -> None:
        self.markets = dict(markets)
        assets = {a.symbol for m in self.markets.values() for a in (m.base, m.quote)}
        assets.update(balances)
        self.supply = dict.fromkeys(sorted(assets), 0)
        for asset, units in balances.items():
            check_id(asset, name="asset")
            self.supply[asset] = check_units(units, name=f"{asset} balance")
        self.free = dict(self.supply)
        self.used = dict.fromkeys(self.supply, 0)
        self.house = dict.fromkeys(self.supply, 0)
        self.fees = dict.fromkeys(self.supply, 0)
        self.orders: dict[str, OrderRecord] = {}
        self.by_client_id: dict[str, str] = {}
        self.open: dict[str, OrderRecord] = {}  # insertion order == time priority
        self.trades: dict[str, Trade] = {}
        self.next_order = 1
        self.next_trade = 1

    def new_order_id(self) -> str:
        """A fresh exchange order id, never one that some order uses as its clientOrderId."""
        while True:
            order_id = f"O{self.next_order:06d}"
            self.next_order += 1
            if order_id not in self.by_client_id:
                return order_id

    def add(self, record: OrderRecord, *, lock: int) -> None:
        """Record a new order; an open one locks ``lock`` units (the caller checked free)."""
        self.orders[record.id] = record
        self.by_client_id[record.client_order_id] = record.id
        if record.status == "open":
            asset, _ = lock_for(self.markets[record.symbol], record.side, 0, record.price)
            record.lock = lock
            self.free[asset] -= lock
            self.used[asset] += lock
            self.open[record.id] = record

    def cancel(self, record: OrderRecord) -> None:
        """Cancel an open order, releasing its whole remaining lock to free."""
        asset, _ = lock_for(self.markets[record.symbol], record.side, 0, record.price)
        self.used[asset] -= record.lock
        self.free[asset] += record.lock
        record.lock = 0
        record.status = "canceled"
        del self.open[record.id]

    def fill(
        self,
        record: OrderRecord,
        qty: int,
        *,
        liquidity: TakerOrMaker,
        fee_rate: Decimal,
        ts: int,
    ) -> Trade:
        """Execute ``qty`` of an open order at its price; move the units; record the trade."""
        market = self.markets[record.symbol]
        base, quote = market.base.symbol, market.quote.symbol
        price = record.price
        remaining = record.amount - record.filled - qty
        # Cumulative rounding: a trade costs what the order's filled total costs after it minus
        # before it (buyer rounded up, seller down). Each trade still lies within
        # [floor(qty*p), ceil(qty*p)], and a buy's trades sum to exactly its initial lock, so
        # partial fills never cost a unit more than was reserved for the order.
        filled_after = record.filled + qty
        if record.side is Side.BUY:
            cost = market.notional(filled_after, price, Rounding.UP) - market.notional(
                record.filled, price, Rounding.UP
            )
            new_lock = record.lock - cost
            self.used[quote] -= cost
            self.house[quote] += cost
            fee, fee_asset = fee_for(qty, fee_rate, Rounding.UP), base
            self.free[base] += qty - fee
            self.house[base] -= qty - fee
        else:
            cost = market.notional(filled_after, price, Rounding.DOWN) - market.notional(
                record.filled, price, Rounding.DOWN
            )
            new_lock = remaining
            self.used[base] -= qty
            self.house[base] += qty
            fee, fee_asset = fee_for(cost, fee_rate, Rounding.UP), quote
            self.free[quote] += cost - fee
            self.house[quote] -= cost - fee
        self.fees[fee_asset] += fee

        trade_id = f"T{self.next_trade:06d}"
        self.next_trade += 1
        trade: Trade = {
            "id": trade_id,
            "order": record.id,
            "clientOrderId": record.client_order_id,
            "timestamp": ts,
            "symbol": record.symbol,
            "side": record.side,
            "takerOrMaker": liquidity,
            "price": price,
            "amount": qty,
            "cost": cost,
            "fee": {"cost": fee, "currency": fee_asset},
        }
        self.trades[trade_id] = trade
        record.lock = new_lock
        record.filled += qty
        record.cost += cost
        record.fee += fee
        record.last_trade_timestamp = ts
        record.trade_ids.append(trade_id)
        if remaining == 0:
            record.status = "closed"
            del self.open[record.id]
        return trade

    def balance(self) -> Balance:
        """The account's balances (copies)."""
        return {
            "free": dict(self.free),
            "used": dict(self.used),
            "total": {a: self.free[a] + self.used[a] for a in self.free},
        }

    def render(self, record: OrderRecord) -> Order:
        """The ccxt-shaped :class:`Order` for a record (shares nothing mutable with it)."""
        market = self.markets[record.symbol]
        fee: Fee = {
            "cost": record.fee,
            "currency": market.base.symbol if record.side is Side.BUY else market.quote.symbol,
        }
        return {
            "id": record.id,
            "clientOrderId": record.client_order_id,
            "timestamp": record.timestamp,
            "lastTradeTimestamp": record.last_trade_timestamp,
            "symbol": record.symbol,
            "type": record.type,
            "side": record.side,
            "price": record.price,
            "amount": record.amount,
            "filled": record.filled,
            "remaining": record.amount - record.filled,
            "cost": record.cost,
            "status": record.status,
            "fee": fee,
            "trades": [copy_trade(self.trades[t]) for t in record.trade_ids],
        }

    def check_conservation(self) -> None:
        """Per asset ``free >= 0``, ``used >= 0`` and ``free + used + house == supply``."""
        for asset, supply in self.supply.items():
            free, used, house = self.free[asset], self.used[asset], self.house[asset]
            if free < 0 or used < 0 or free + used + house != supply:
                raise FundInvariantViolation(
                    f"{asset}: free {free}, used {used}, house {house}: expected free, used >= 0"
                    f" and free + used + house == supply {supply}"
                )

    def check_invariants(self) -> None:
        """Conservation, plus: every lock is exactly what its remainder needs, ``used`` is
        their sum, and every order's ``filled``/``cost``/``fee`` are the sums of its trades."""
        self.check_conservation()
        used = dict.fromkeys(self.supply, 0)
        for record in self.orders.values():
            trades = [self.trades[t] for t in record.trade_ids]
            sums = (
                sum(t["amount"] for t in trades),
                sum(t["cost"] for t in trades),
                sum(t["fee"]["cost"] for t in trades),
            )
            if sums != (record.filled, record.cost, record.fee) or record.filled > record.amount:
                raise FundInvariantViolation(
                    f"order {record.id} of {record.amount} has filled/cost/fee "
                    f"{(record.filled, record.cost, record.fee)}; its trades sum to {sums}"
                )
            is_open = record.status == "open"
            if is_open != (record.id in self.open):
                raise FundInvariantViolation(f"order {record.id} ({record.status}) open-set error")
            asset, want = lock_for(
                self.markets[record.symbol], record.side, record.amount, record.price
            )
            if record.side is Side.BUY:
                want -= record.cost  # the lock is what the rest of the order will cost
            else:
                want -= record.filled
            want = want if is_open else 0
            if record.lock != want:
                raise FundInvariantViolation(
                    f"order {record.id} ({record.status}) locks {record.lock} {asset}, needs {want}"
                )
            used[asset] += record.lock
        if used != self.used:
            raise FundInvariantViolation(f"used {self.used} != sum of the order locks {used}")

    # -- plain data ----------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        """The books as plain data (Decimal as str, Side as str)."""
        return {
            "markets": [_dump_market(m) for m in self.markets.values()],
            "supply": dict(self.supply),
            "free": dict(self.free),
            "house": dict(self.house),
            "fees": dict(self.fees),
            "orders": [_dump_order(r) for r in self.orders.values()],
            "trades": [_dump_trade(t) for t in self.trades.values()],
            "next_order": self.next_order,
            "next_trade": self.next_trade,
        }

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> Book:
        """Inverse of :meth:`dump`. Raises ValueError/TypeError/KeyError on malformed data,
        FundInvariantViolation if the books do not add up."""
        markets = {m.symbol: m for m in (_load_market(d) for d in data["markets"])}
        book = cls(markets, data["supply"])
        book.free = _units(data["free"], book.supply)
        book.house = _units(data["house"], book.supply, allow_negative=True)
        book.fees = _units(data["fees"], book.supply)
        for item in data["trades"]:
            trade = _load_trade(item)
            book.trades[trade["id"]] = trade
        for item in data["orders"]:
            record = _load_order(item)
            book.orders[record.id] = record
            book.by_client_id[record.client_order_id] = record.id
            if record.status == "open":
                book.open[record.id] = record
                asset, _ = lock_for(markets[record.symbol], record.side, 0, record.price)
                book.used[asset] += record.lock
        referenced = [t for r in book.orders.values() for t in r.trade_ids]
        if sorted(referenced) != sorted(book.trades):
            raise ValueError("the orders' trade ids are not exactly the recorded trades")
        book.next_order = check_units(data["next_order"], name="next_order", allow_zero=False)
        book.next_trade = check_units(data["next_trade"], name="next_trade", allow_zero=False)
        for prefix, ids, next_id in (
            ("O", book.orders, book.next_order),
            ("T", book.trades, book.next_trade),
        ):
            for used_id in ids:
                if used_id[:1] == prefix and used_id[1:].isdigit() and int(used_id[1:]) >= next_id:
                    raise ValueError(f"id {used_id} is not below the next id {next_id}")
        book.check_invariants()
        return book


def _units(
    data: Mapping[str, Any], assets: Mapping[str, int], *, allow_negative: bool = False
) -> dict[str, int]:
    if set(data) != set(assets):
        raise ValueError(f"assets {sorted(data)} != {sorted(assets)}")
    return {a: check_units(data[a], name=a, allow_negative=allow_negative) for a in sorted(assets)}


def _decimal(text: object) -> Decimal:
    if not isinstance(text, str):
        raise TypeError(f"expected a decimal string, got {text!r}")
    try:
        return Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not a decimal: {text!r}") from None


def _dump_market(market: Market) -> dict[str, Any]:
    return {
        "symbol": market.symbol,
        "base": [market.base.symbol, market.base.precision],
        "quote": [market.quote.symbol, market.quote.precision],
    }


def _load_market(data: Mapping[str, Any]) -> Market:
    (base, base_precision), (quote, quote_precision) = data["base"], data["quote"]
    return Market(
        symbol=data["symbol"],
        base=Asset(symbol=base, precision=base_precision),
        quote=Asset(symbol=quote, precision=quote_precision),
    )


def _dump_order(record: OrderRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "clientOrderId": record.client_order_id,
        "timestamp": record.timestamp,
        "lastTradeTimestamp": record.last_trade_timestamp,
        "symbol": record.symbol,
        "type": record.type,
        "side": str(record.side),
        "price": str(record.price),
        "amount": record.amount,
        "filled": record.filled,
        "cost": record.cost,
        "fee": record.fee,
        "status": record.status,
        "lock": record.lock,
        "trades": list(record.trade_ids),
    }


def _load_order(data: Mapping[str, Any]) -> OrderRecord:
    if data["type"] not in ("limit", "market"):
        raise ValueError(f"order type {data['type']!r}")
    if data["status"] not in ("open", "closed", "canceled", "rejected"):
        raise ValueError(f"order status {data['status']!r}")
    last = data["lastTradeTimestamp"]
    return OrderRecord(
        id=check_id(data["id"], name="id"),
        client_order_id=check_id(data["clientOrderId"], name="clientOrderId"),
        timestamp=check_units(data["timestamp"], name="timestamp"),
        symbol=data["symbol"],
        type=data["type"],
        side=Side(data["side"]),
        price=_decimal(data["price"]),
        amount=check_units(data["amount"], name="amount", allow_zero=False),
        filled=check_units(data["filled"], name="filled"),
        cost=check_units(data["cost"], name="cost"),
        fee=check_units(data["fee"], name="fee"),
        status=data["status"],
        lock=check_units(data["lock"], name="lock"),
        last_trade_timestamp=None if last is None else check_units(last, name="last"),
        trade_ids=[check_id(t, name="trade id") for t in data["trades"]],
    )


def _dump_trade(trade: Trade) -> dict[str, Any]:
    plain: dict[str, Any] = dict(copy_trade(trade))
    plain["side"] = str(trade["side"])
    plain["price"] = str(trade["price"])
    return plain


def _load_trade(data: Mapping[str, Any]) -> Trade:
    if data["takerOrMaker"] not in ("taker", "maker"):
        raise ValueError(f"takerOrMaker {data['takerOrMaker']!r}")
    fee = data["fee"]
    return {
        "id": check_id(data["id"], name="id"),
        "order": check_id(data["order"], name="order"),
        "clientOrderId": check_id(data["clientOrderId"], name="clientOrderId"),
        "timestamp": check_units(data["timestamp"], name="timestamp"),
        "symbol": check_id(data["symbol"], name="symbol"),
        "side": Side(data["side"]),
        "takerOrMaker": data["takerOrMaker"],
        "price": _decimal(data["price"]),
        "amount": check_units(data["amount"], name="amount", allow_zero=False),
        "cost": check_units(data["cost"], name="cost"),
        "fee": {
            "cost": check_units(fee["cost"], name="fee"),
            "currency": check_id(fee["currency"], name="currency"),
        },
    }


def check_markets(markets: Mapping[str, Market] | list[Market]) -> dict[str, Market]:
    """Markets by symbol; each asset symbol must have one precision across them."""
    items = (
        list(markets.items()) if isinstance(markets, Mapping) else [(m.symbol, m) for m in markets]
    )
    if not items:
        raise InvalidConfig("a simulated exchange needs at least one market")
    checked: dict[str, Market] = {}
    precision: dict[str, int] = {}
    for symbol, market in items:
        if not isinstance(market, Market) or market.symbol != symbol:
            raise InvalidConfig(f"market {symbol!r} must be a Market with that symbol")
        for asset in (market.base, market.quote):
            if precision.setdefault(asset.symbol, asset.precision) != asset.precision:
                raise InvalidConfig(f"asset {asset.symbol} has two precisions in the markets")
        checked[symbol] = market
    return checked
