"""The exchange adapter interface (ccxt-shaped, exact types) and a simulated exchange.

Depends on ``messages`` only. The runtime talks to :class:`Exchange` and :class:`FillFeed`;
:class:`SimulatedExchange` implements both for tests, drills and demos, and ``prices`` supplies
its price paths. For crash drills, :class:`ExchangeServer` hosts a simulated exchange in its
own process (``python -m exchange.server``), optionally moved by :class:`PriceDriver`s, and
:class:`RemoteExchange` is its client: the exchange outlives any client, ``kill -9`` included.
"""

from exchange._config import PartialFill
from exchange._wire import DriverStatus, Endpoint, ServerStatus
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
from exchange.hosted import ExchangeServer, PriceDriver, StepClock
from exchange.prices import PricePoint, load_csv, random_walk
from exchange.remote import RemoteExchange
from exchange.simulated import STATE_VERSION, SimulatedExchange

__all__ = [
    "STATE_VERSION",
    "Balance",
    "DriverStatus",
    "Endpoint",
    "Exchange",
    "ExchangeServer",
    "Fee",
    "FillFeed",
    "Order",
    "OrderStatus",
    "OrderType",
    "PartialFill",
    "PriceDriver",
    "PricePoint",
    "RemoteExchange",
    "ServerStatus",
    "SimulatedExchange",
    "StepClock",
    "TakerOrMaker",
    "Trade",
    "load_csv",
    "random_walk",
    "trade_to_fill",
]
