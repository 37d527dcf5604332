"""The exchange adapter interface (ccxt-shaped, exact types) and a simulated exchange.

Depends on ``messages`` only. The runtime talks to :class:`Exchange` and :class:`FillFeed`;
:class:`SimulatedExchange` implements both for tests, drills and demos, and ``prices`` supplies
its price paths.
"""

from exchange._config import PartialFill
from exchange.base import (
    Balance,
    Exchange,
    Fee,
    FillFeed,
    Order,
    OrderStatus,
    OrderType,
    TakerOrMaker,
    Trade,
    trade_to_fill,
)
from exchange.prices import PricePoint, load_csv, random_walk
from exchange.simulated import STATE_VERSION, SimulatedExchange

__all__ = [
    "STATE_VERSION",
    "Balance",
    "Exchange",
    "Fee",
    "FillFeed",
    "Order",
    "OrderStatus",
    "OrderType",
    "PartialFill",
    "PricePoint",
    "SimulatedExchange",
    "TakerOrMaker",
    "Trade",
    "load_csv",
    "random_walk",
    "trade_to_fill",
]
