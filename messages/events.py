"""Events: facts that happened (past tense). Exchange facts first."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal

from messages.base import Message, Side, check_enum, check_id
from messages.money import check_price, check_units


class Liquidity(enum.StrEnum):
    """Whether a fill added (maker) or took (taker) liquidity."""

    MAKER = "maker"
    TAKER = "taker"


@dataclass(frozen=True, slots=True, kw_only=True)
class Fill(Message):
    """One exchange trade against one of our orders (ccxt's trade structure, exact units).

    Attributes:
        trade_id: the exchange's unique trade id; the idempotency key of the fill.
        order_id: the exchange's order id.
        client_order_id: our deterministic client order id for the order.
        symbol: market symbol, e.g. ``"BTC/USDT"``.
        side: side of *our* order.
        qty: filled base quantity, minor units, > 0.
        price: execution price (quote per base, major units).
        cost: quote minor units that changed hands, as the exchange rounded them; must lie
            within ``[floor(qty*price), ceil(qty*price)]``.
        fee: fee charged, minor units of ``fee_asset``, >= 0.
        fee_asset: symbol of the asset the fee was charged in.
        liquidity: maker or taker.
    """

    trade_id: str
    order_id: str
    client_order_id: str
    symbol: str
    side: Side
    qty: int
    price: Decimal
    cost: int
    fee: int
    fee_asset: str
    liquidity: Liquidity = Liquidity.MAKER

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        check_id(self.trade_id, name="trade_id")
        check_id(self.order_id, name="order_id")
        check_id(self.client_order_id, name="client_order_id")
        check_id(self.symbol, name="symbol")
        check_enum(self.side, Side, name="side")
        check_units(self.qty, name="qty", allow_zero=False)
        check_price(self.price)
        check_units(self.cost, name="cost")
        check_units(self.fee, name="fee")
        check_id(self.fee_asset, name="fee_asset")
        check_enum(self.liquidity, Liquidity, name="liquidity")
