"""A deterministic, exact, thread-safe simulated exchange with one account.

Matching: a limit order rests (it is never matched on arrival, even when marketable) and fills
*as maker, at its own limit price* from the next price step on: a step to price ``p`` makes buy
limits at ``>= p`` and sell limits at ``<= p`` fillable, and each fillable order gets a random
slice (:class:`PartialFill`, seeded) of its amount per step, so orders fill over several steps.
A market order fills whole, immediately, as taker at the current price.

Money: a trade's ``cost`` is ``market.notional(amount, price)``, rounded UP for the buyer and
DOWN for the seller; the fee is the maker/taker rate of what the account receives (buy: base,
sell: quote), rounded UP. An open order locks ``used``: a buy ``notional(remaining, price, UP)``
quote, a sell ``remaining`` base; the lock is recomputed after every trade and released by
cancel. Because each trade's cost rounds up on its own, a buy's partial trade can cost one unit
more than the lock it releases; that unit comes from ``free``, and when ``free`` is empty the
trade takes the whole remainder instead (which costs exactly the remaining lock), so no balance
ever goes negative.

Conservation: the exchange keeps a *house* account, the counterparty of every trade and the
collector of every fee (it may go negative: it stands for unbounded outside liquidity). Every
trade moves units between the account and the house only, so per asset::

    free + used + house == supply        (supply: the initial balances, constant)

:meth:`SimulatedExchange.check_invariants` checks that and every order's lock exactly.

Determinism: every random draw (partial-fill slices, rejections, re-deliveries) comes from one
``random.Random(seed)`` in call order, and timestamps come from the injected ``clock`` (clamped
to be non-decreasing), so the same calls give the same orders, trades and ids.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from fractions import Fraction
from typing import Any

from exchange._book import Book, OrderRecord, check_markets, copy_trade, lock_for
from exchange._config import DEFAULT_PARTIAL_FILL, PartialFill, Settings
from exchange._feed import Feed
from exchange.base import Balance, Order, OrderType, Trade
from messages import (
    CorruptSnapshot,
    DuplicateOrder,
    ExchangeUnavailable,
    FundInvariantViolation,
    InsufficientCapital,
    InvalidConfig,
    InvalidMessage,
    Market,
    Side,
    UnknownOrder,
    check_id,
    check_price,
    check_ts,
    check_units,
)

#: Version of the :meth:`SimulatedExchange.to_state` format.
STATE_VERSION = 1
_ORDER_TYPES: tuple[OrderType, ...] = ("limit", "market")
_ZERO = Decimal(0)


class SimulatedExchange:
    """A simulated exchange account (implements :class:`Exchange` and :class:`FillFeed`).

    Args:
        markets: the markets traded, by symbol (or an iterable of markets).
        balances: the account's initial balances, minor units per asset symbol; assets of the
            markets that are missing start at 0.
        maker_fee: fee rate of resting (limit) fills, a Decimal in [0, 1].
        taker_fee: fee rate of market-order fills.
        latency: seconds each request waits (through ``sleep``) before it is served.
        reject_rate: chance in [0, 1] that a well-formed, funded order is rejected: it is then
            recorded with ``status == 'rejected'`` and locks nothing.
        duplicate_rate: chance in [0, 1] that the fill feed delivers a trade a second time (at
            the next price step); ``fetch_my_trades`` never repeats a trade.
        partial_fill: slice drawn per price step for each fillable limit order; ``None`` fills
            a fillable order whole at once.
        seed: seed of the ``random.Random`` behind every random choice.
        clock: the time in integer nanoseconds (timestamps are clamped non-decreasing).
        sleep: called with the latency in seconds; by default nothing sleeps.

    Insufficient free balance for a new order raises :class:`messages.InsufficientCapital`
    (ccxt raises ``InsufficientFunds``) and records nothing, so a retry with the same
    ``clientOrderId`` may succeed later. While unavailable (:meth:`set_available`), requests
    and :meth:`drain_fills` raise :class:`messages.ExchangeUnavailable` and the feed holds
    its trades; the market (:meth:`on_price`) keeps moving and resting orders keep filling.
    """

    def __init__(
        self,
        markets: Mapping[str, Market] | Iterable[Market],
        balances: Mapping[str, int],
        *,
        maker_fee: Decimal = _ZERO,
        taker_fee: Decimal = _ZERO,
        latency: Decimal = _ZERO,
        reject_rate: Decimal = _ZERO,
        duplicate_rate: Decimal = _ZERO,
        partial_fill: PartialFill | None = DEFAULT_PARTIAL_FILL,
        seed: int = 0,
        clock: Callable[[], int] = time.time_ns,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self._settings = settings = Settings(
            maker_fee=maker_fee,
            taker_fee=taker_fee,
            latency=latency,
            reject_rate=reject_rate,
            duplicate_rate=duplicate_rate,
            partial_fill=partial_fill,
            seed=seed,
        )
        self._rng = random.Random(settings.seed)
        self._clock = clock
        self._sleep = sleep
        markets = markets if isinstance(markets, Mapping) else list(markets)
        self._book = Book(check_markets(markets), balances)
        self._prices: dict[str, Decimal] = {}
        self._last_ts = 0
        self._available = True

        self._lock = threading.RLock()
        self._feed = Feed(self._lock)

    # -- Exchange ------------------------------------------------------------------------

    def load_markets(self) -> dict[str, Market]:
        """The markets this exchange trades, by symbol."""
        self._delay()
        with self._lock:
            self._check_available()
            return dict(self._book.markets)

    def create_order(  # noqa: PLR0917 - ccxt's positional signature
        self,
        symbol: str,
        type: OrderType,
        side: Side | str,
        amount: int,
        price: Decimal | None = None,
        params: Mapping[str, object] | None = None,
    ) -> Order:
        """Place an order; see :meth:`Exchange.create_order`. The only param: clientOrderId.

        Without a ``clientOrderId`` the exchange id serves as one. An unknown param raises
        InvalidMessage: a misspelt ``clientOrderId`` silently ignored would defeat idempotency.
        """
        self._delay()
        with self._lock:
            self._check_available()
            market = self._market(symbol)
            if type not in _ORDER_TYPES:
                raise InvalidMessage(f"order type must be 'limit' or 'market', got {type!r}")
            try:
                order_side = Side(side)
            except ValueError:
                raise InvalidMessage(f"side must be 'buy' or 'sell', got {side!r}") from None
            check_units(amount, name="amount", allow_zero=False)
            if type == "limit":
                price = check_price(price)
            elif price is not None:
                raise InvalidMessage(f"a market order takes no price, got {price!r}")
            client_id = _client_order_id(params)
            book = self._book
            if client_id is not None and client_id in book.by_client_id:
                return self._resent(
                    existing=book.orders[book.by_client_id[client_id]],
                    type=type,
                    side=order_side,
                    amount=amount,
                    price=price,
                    symbol=symbol,
                )
            if client_id is not None and client_id in book.orders:
                raise DuplicateOrder(f"clientOrderId {client_id!r} is another order's exchange id")
            if price is None:  # a market order: it takes the current price
                price = self._prices.get(symbol)
                if price is None:
                    raise ExchangeUnavailable(f"no price for {symbol} yet: no market order")
            asset, need = lock_for(market, order_side, amount, price)
            if book.free[asset] < need:
                raise InsufficientCapital(
                    f"{type} {order_side} {amount} {symbol} needs {need} {asset}, "
                    f"free is {book.free[asset]}"
                )

            now = self._now()
            order_id = book.new_order_id()
            record = OrderRecord(
                id=order_id,
                client_order_id=order_id if client_id is None else client_id,
                timestamp=now,
                symbol=symbol,
                type=type,
                side=order_side,
                price=price,
                amount=amount,
            )
            if self._chance(self._settings.reject_rate):
                record.status = "rejected"
            book.add(record, lock=need)
            if type == "market" and record.status == "open":
                self._fill(record, amount, record.timestamp)
            book.check_conservation()
            order = book.render(record)
        self._feed.dispatch(self._is_available)
        return order

    def cancel_order(self, id: str, symbol: str | None = None) -> Order:
        """Cancel an open order, releasing its remaining lock; idempotent.

        An order that is no longer open is returned unchanged (read its ``status``).
        """
        self._delay()
        with self._lock:
            self._check_available()
            record = self._find(id, symbol)
            if record.status == "open":
                self._book.cancel(record)
                self._book.check_conservation()
            return self._book.render(record)

    def fetch_order(self, id: str, symbol: str | None = None) -> Order:
        """One order, by exchange id or ``clientOrderId``."""
        self._delay()
        with self._lock:
            self._check_available()
            return self._book.render(self._find(id, symbol))

    def fetch_open_orders(self, symbol: str | None = None) -> list[Order]:
        """Orders still open, oldest first."""
        self._delay()
        with self._lock:
            self._check_available()
            if symbol is not None:
                self._market(symbol)
            return [
                self._book.render(r)
                for r in self._book.open.values()
                if symbol is None or r.symbol == symbol
            ]

    def fetch_my_trades(
        self, symbol: str | None = None, since: int | None = None, limit: int | None = None
    ) -> list[Trade]:
        """The authoritative trade record; see :meth:`Exchange.fetch_my_trades`."""
        self._delay()
        with self._lock:
            self._check_available()
            if symbol is not None:
                self._market(symbol)
            if since is not None:
                check_ts(since, name="since")
            if limit is not None and (
                isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0
            ):
                raise InvalidMessage(f"limit must be a positive int, got {limit!r}")
            trades = [
                t
                for t in self._book.trades.values()
                if (symbol is None or t["symbol"] == symbol)
                and (since is None or t["timestamp"] >= since)
            ]
            if limit is not None:
                trades = trades[:limit] if since is not None else trades[-limit:]
            return [copy_trade(t) for t in trades]

    def fetch_balance(self) -> Balance:
        """Free, used and total balances of the account, minor units per asset."""
        self._delay()
        with self._lock:
            self._check_available()
            return self._book.balance()

    # -- FillFeed ------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[Trade], None]) -> Callable[[], None]:
        """Call ``callback(trade)`` for every trade delivered from now on.

        Callbacks run outside the exchange's lock, one delivery at a time and in delivery
        order, on a thread that produced trades. A callback should not raise: the exception
        propagates to that thread's call, and the trade stays in ``fetch_my_trades``.
        Returns a function that unsubscribes.
        """
        return self._feed.subscribe(callback)

    def drain_fills(self) -> list[Trade]:
        """The trades delivered since the previous call (a re-delivered trade appears again)."""
        with self._lock:
            self._check_available()
            return self._feed.drain()

    # -- The market ----------------------------------------------------------------------

    def on_price(self, symbol: str, price: Decimal) -> list[Trade]:
        """One price step of ``symbol``: match its resting orders; returns the new trades.

        Re-deliveries scheduled by earlier trades are delivered first. Works while the
        exchange is unavailable (the market does not wait for our connection).
        """
        with self._lock:
            self._market(symbol)
            check_price(price)
            ts = self._now()
            self._prices[symbol] = price
            self._feed.deliver_duplicates()
            new: list[Trade] = []
            for record in list(self._book.open.values()):
                if record.symbol != symbol or record.type != "limit":
                    continue
                if record.price >= price if record.side is Side.BUY else record.price <= price:
                    new.append(copy_trade(self._fill(record, self._slice(record), ts)))
            self._book.check_conservation()
        self._feed.dispatch(self._is_available)
        return new

    def advance(self, price: Decimal, symbol: str | None = None) -> list[Trade]:
        """:meth:`on_price` for ``symbol``, which may be omitted when there is one market."""
        if symbol is None:
            if len(self._book.markets) != 1:
                raise InvalidMessage(
                    f"advance() needs a symbol: {len(self._book.markets)} markets are traded"
                )
            (symbol,) = self._book.markets
        return self.on_price(symbol, price)

    def price(self, symbol: str) -> Decimal | None:
        """The last price of ``symbol``, or ``None`` before its first price step."""
        with self._lock:
            self._market(symbol)
            return self._prices.get(symbol)

    def set_available(self, available: bool) -> None:
        """Simulate an outage (``False``) or its end (``True``, which resumes the feed)."""
        with self._lock:
            self._available = bool(available)
        if available:
            self._feed.dispatch(self._is_available)

    # -- The books -----------------------------------------------------------------------

    def supply(self) -> dict[str, int]:
        """Per asset, the constant ``free + used + house`` (the initial balances)."""
        with self._lock:
            return dict(self._book.supply)

    def house_balance(self) -> dict[str, int]:
        """The house account per asset: trade counterparty and fee collector (may be < 0)."""
        with self._lock:
            return dict(self._book.house)

    def fees_collected(self) -> dict[str, int]:
        """Fees charged so far per asset (already part of :meth:`house_balance`)."""
        with self._lock:
            return dict(self._book.fees)

    def check_invariants(self) -> None:
        """Raise FundInvariantViolation unless the books hold exactly.

        Per asset ``free >= 0`` and ``free + used + house == supply``; every open order locks
        exactly what its remainder needs and ``used`` is the sum of those locks; every order's
        ``filled``, ``cost`` and ``fee`` are the sums over its trades.
        """
        with self._lock:
            self._book.check_invariants()

    # -- Plain-data state ----------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """The whole exchange as plain data (str, int, bool, None, list, dict): JSON/msgpack.

        Decimals are strings. Subscribers, ``clock`` and ``sleep`` are not state, and
        deliveries not yet handed to subscribers are dropped (the trade record keeps them).
        """
        with self._lock:
            version, internal, gauss = self._rng.getstate()
            return {
                "version": STATE_VERSION,
                "settings": self._settings.dump(),
                "book": self._book.dump(),
                "prices": {s: str(p) for s, p in self._prices.items()},
                "last_ts": self._last_ts,
                "available": self._available,
                "feed": [t["id"] for t in self._feed.pending],
                "redeliver": [t["id"] for t in self._feed.redeliver],
                "rng": [version, list(internal), gauss],
            }

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, Any],
        *,
        clock: Callable[[], int] = time.time_ns,
        sleep: Callable[[float], None] | None = None,
    ) -> SimulatedExchange:
        """Rebuild an exchange from :meth:`to_state`; CorruptSnapshot if it is not one."""
        try:
            if state["version"] != STATE_VERSION:
                raise ValueError(f"state version {state['version']!r}, expected {STATE_VERSION}")
            book = Book.load(state["book"])
            settings = Settings.load(state["settings"])
            exchange = cls(book.markets, {}, clock=clock, sleep=sleep)
            exchange._settings = settings
            exchange._book = book
            exchange._prices = {
                exchange._market(s).symbol: check_price(Decimal(p))
                for s, p in state["prices"].items()
            }
            exchange._last_ts = check_ts(state["last_ts"], name="last_ts")
            exchange._available = bool(state["available"])
            exchange._feed.pending = [copy_trade(book.trades[t]) for t in state["feed"]]
            exchange._feed.redeliver = [copy_trade(book.trades[t]) for t in state["redeliver"]]
            version, internal, gauss = state["rng"]
            exchange._rng.setstate((version, tuple(internal), gauss))
        except (KeyError, IndexError, TypeError, ValueError, ArithmeticError) as exc:
            raise CorruptSnapshot(f"not a simulated exchange state: {exc!r}") from exc
        except (FundInvariantViolation, InvalidConfig) as exc:
            raise CorruptSnapshot(f"simulated exchange state does not add up: {exc}") from exc
        return exchange

    # -- Internals -------------------------------------------------------------------------

    def _delay(self) -> None:
        if self._settings.latency and self._sleep is not None:
            self._sleep(float(self._settings.latency))  # a duration for sleep(), never money

    def _check_available(self) -> None:
        if not self._available:
            raise ExchangeUnavailable("the simulated exchange is unavailable (simulated outage)")

    def _market(self, symbol: object) -> Market:
        markets = self._book.markets
        if not isinstance(symbol, str) or symbol not in markets:
            raise InvalidMessage(f"unknown symbol {symbol!r}; markets are {sorted(markets)}")
        return markets[symbol]

    def _find(self, order_id: str, symbol: str | None) -> OrderRecord:
        # Exchange ids and clientOrderIds never collide (create_order and new_order_id see
        # to it), so the lookup order does not matter.
        check_id(order_id, name="order id")
        if symbol is not None:
            self._market(symbol)
        book = self._book
        record = book.orders.get(order_id)
        if record is None and order_id in book.by_client_id:
            record = book.orders[book.by_client_id[order_id]]
        if record is None or (symbol is not None and record.symbol != symbol):
            where = "" if symbol is None else f" in {symbol}"
            raise UnknownOrder(f"no order with id or clientOrderId {order_id!r}{where}")
        return record

    def _resent(
        self,
        *,
        existing: OrderRecord,
        type: OrderType,
        side: Side,
        amount: int,
        price: Decimal | None,
        symbol: str,
    ) -> Order:
        old = (existing.symbol, existing.type, existing.side, existing.amount)
        if old != (symbol, type, side, amount) or (type == "limit" and existing.price != price):
            raise DuplicateOrder(
                f"clientOrderId {existing.client_order_id!r} is order {existing.id} ({old},"
                f" price {existing.price}), not {(symbol, type, side, amount)} price {price}"
            )
        return self._book.render(existing)

    def _now(self) -> int:
        self._last_ts = max(self._last_ts, check_ts(self._clock(), name="clock()"))
        return self._last_ts

    def _chance(self, rate: Decimal) -> bool:
        # No draw at rate 0, so turning a feature off leaves the other draws as they were.
        return bool(rate) and Fraction(self._rng.getrandbits(53), 2**53) < rate  # exact

    def _slice(self, record: OrderRecord) -> int:
        remaining = record.amount - record.filled
        if self._settings.partial_fill is None:
            return remaining
        return min(remaining, self._settings.partial_fill.draw(record.amount, self._rng))

    def _fill(self, record: OrderRecord, qty: int, ts: int) -> Trade:
        maker = record.type == "limit"
        trade = self._book.fill(
            record,
            qty,
            liquidity="maker" if maker else "taker",
            fee_rate=self._settings.maker_fee if maker else self._settings.taker_fee,
            ts=ts,
        )
        self._feed.deliver(trade)
        if self._chance(self._settings.duplicate_rate):
            self._feed.redeliver.append(copy_trade(trade))
        return trade

    def _is_available(self) -> bool:
        return self._available


def _client_order_id(params: Mapping[str, object] | None) -> str | None:
    if params is None:
        return None
    unknown = sorted(set(params) - {"clientOrderId"})
    if unknown:
        raise InvalidMessage(f"unsupported params {unknown}; the only one is clientOrderId")
    client_id = params.get("clientOrderId")
    return None if client_id is None else check_id(client_id, name="clientOrderId")
