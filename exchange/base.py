"""The exchange adapter interface: ccxt's unified API, with capflow's exact types.

The runtime talks to an exchange only through :class:`Exchange` (requests) and :class:`FillFeed`
(trades pushed or polled as they happen). Method names, argument order and the field names of
:class:`Order`, :class:`Trade` and :class:`Balance` are ccxt's, so a ccxt-backed adapter can be
added later without touching the runtime. The *types* are capflow's, and that is the one
deliberate deviation; a ccxt adapter converts at its boundary:

==================================  =========================  ================================
field                               ccxt                       capflow
==================================  =========================  ================================
``amount``, ``filled``,             float, major units         ``int`` minor units of the
``remaining``                       of base                    market's base asset
``cost``                            float, major units         ``int`` minor units of quote
``fee.cost``                        float                      ``int`` minor units of
                                                               ``fee.currency``
``price``                           float                      ``Decimal`` (quote per base,
                                                               major units)
``timestamp``, ``since``            int milliseconds           ``int`` **nanoseconds** since
                                                               the epoch
``side``                            ``'buy'``/``'sell'``       :class:`messages.Side` (a
                                                               ``StrEnum`` equal to those)
``datetime``, ``info``,             present                    omitted
``average``, ``fees``
==================================  =========================  ================================

Fields with no value are ``None`` as in ccxt (``price`` of a market order before it fills,
``lastTradeTimestamp`` of an order without trades).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Literal, Protocol, TypedDict, runtime_checkable

from messages import Fill, Liquidity, Market, Side

OrderType = Literal["limit", "market"]
OrderStatus = Literal["open", "closed", "canceled", "rejected"]
TakerOrMaker = Literal["taker", "maker"]


class Fee(TypedDict):
    """A fee charged: ``cost`` minor units of ``currency``."""

    cost: int
    currency: str


class Trade(TypedDict):
    """One execution against one of our orders (ccxt's trade structure, exact types)."""

    id: str
    order: str
    clientOrderId: str
    timestamp: int
    symbol: str
    side: Side
    takerOrMaker: TakerOrMaker
    price: Decimal
    amount: int
    cost: int
    fee: Fee


class Order(TypedDict):
    """An order as the exchange reports it (ccxt's order structure, exact types).

    ``filled``, ``cost`` and ``fee.cost`` are the sums over ``trades``, and
    ``remaining == amount - filled`` (for a cancelled order: what was never filled).
    """

    id: str
    clientOrderId: str
    timestamp: int
    lastTradeTimestamp: int | None
    symbol: str
    type: OrderType
    side: Side
    price: Decimal | None
    amount: int
    filled: int
    remaining: int
    cost: int
    status: OrderStatus
    fee: Fee
    trades: list[Trade]


class Balance(TypedDict):
    """The account's balances per asset symbol, minor units; ``total == free + used``."""

    free: dict[str, int]
    used: dict[str, int]
    total: dict[str, int]


@runtime_checkable
class Exchange(Protocol):
    """Requests to one exchange account, ccxt-style. Implementations are thread-safe.

    Errors (all :class:`messages.CapflowError`): ``ExchangeUnavailable`` when the exchange
    cannot be reached (retry may help); ``InvalidMessage`` for an unknown symbol, order type or
    side; ``InvalidAmount`` for an amount that is not a positive int or a price that is not a
    positive Decimal; ``UnknownOrder`` for an order id the account does not have;
    ``InsufficientCapital`` (ccxt's ``InsufficientFunds``) when the account's free balance
    cannot cover a new order; ``DuplicateOrder`` when a ``clientOrderId`` is re-used for a
    different order. A refused request changes nothing.
    """

    def load_markets(self) -> dict[str, Market]:
        """The markets this exchange trades, by symbol."""
        ...

    def create_order(  # noqa: PLR0917 - ccxt's positional signature
        self,
        symbol: str,
        type: OrderType,
        side: Side | str,
        amount: int,
        price: Decimal | None = None,
        params: Mapping[str, object] | None = None,
    ) -> Order:
        """Place an order; idempotent on ``params["clientOrderId"]``.

        Re-sending the same order with the same ``clientOrderId`` returns the existing order
        instead of placing a second one, so a retried placement is never duplicated.
        """
        ...

    def cancel_order(self, id: str, symbol: str | None = None) -> Order:
        """Cancel an open order by exchange id or ``clientOrderId``; returns its final state.

        Cancelling an order that is no longer open changes nothing and returns it as it is:
        the caller reads ``status``.
        """
        ...

    def fetch_order(self, id: str, symbol: str | None = None) -> Order:
        """One order, by exchange id or by ``clientOrderId``."""
        ...

    def fetch_open_orders(self, symbol: str | None = None) -> list[Order]:
        """Orders still open, oldest first."""
        ...

    def fetch_my_trades(
        self, symbol: str | None = None, since: int | None = None, limit: int | None = None
    ) -> list[Trade]:
        """The account's trades, oldest first; the authoritative record (never duplicated).

        ``since`` (ns) keeps trades with ``timestamp >= since``. ``limit`` keeps the first
        ``limit`` of those when ``since`` is given, else the most recent ``limit``.
        """
        ...

    def fetch_balance(self) -> Balance:
        """The account's free, used (locked by open orders) and total balances."""
        ...


@runtime_checkable
class FillFeed(Protocol):
    """Trades as they happen: pushed to subscribers, or polled. Delivery is at-least-once.

    A trade may be delivered more than once (exchanges re-send); consumers dedupe on the trade
    ``id``. ``Exchange.fetch_my_trades`` is the record to reconcile against.
    """

    def subscribe(self, callback: Callable[[Trade], None]) -> Callable[[], None]:
        """Call ``callback`` with every trade delivered from now on; returns an unsubscribe."""
        ...

    def drain_fills(self) -> list[Trade]:
        """The trades delivered since the previous call, in delivery order."""
        ...


def trade_to_fill(trade: Trade, *, message_id: str | None = None) -> Fill:
    """The capflow :class:`messages.Fill` event for an exchange trade.

    The message id defaults to ``"fill-" + trade id`` so a re-delivered trade gives an equal
    ``Fill``; its timestamp is the trade's. ``Fill`` validates every field.
    """
    return Fill(
        message_id=message_id if message_id is not None else f"fill-{trade['id']}",
        ts_ns=trade["timestamp"],
        trade_id=trade["id"],
        order_id=trade["order"],
        client_order_id=trade["clientOrderId"],
        symbol=trade["symbol"],
        side=trade["side"],
        qty=trade["amount"],
        price=trade["price"],
        cost=trade["cost"],
        fee=trade["fee"]["cost"],
        fee_asset=trade["fee"]["currency"],
        liquidity=Liquidity(trade["takerOrMaker"]),
    )
