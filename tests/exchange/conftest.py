"""Shared fixtures for the exchange tests: a market, a manual clock, an exchange factory."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from exchange import SimulatedExchange
from messages import Asset, Market

BTC = Asset(symbol="BTC", precision=8)
USDT = Asset(symbol="USDT", precision=2)
ETH = Asset(symbol="ETH", precision=8)
BTC_USDT = Market(symbol="BTC/USDT", base=BTC, quote=USDT)
ETH_USDT = Market(symbol="ETH/USDT", base=ETH, quote=USDT)
#: A coarse market (whole units on both sides) for hand-checked rounding examples.
XYZ_USD = Market(
    symbol="XYZ/USD", base=Asset(symbol="XYZ", precision=0), quote=Asset(symbol="USD", precision=0)
)

D = Decimal


class ManualClock:
    """A clock the test moves by hand; each read returns the current ``now`` (ns)."""

    def __init__(self, now: int = 1_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def make_exchange(clock: ManualClock) -> Callable[..., SimulatedExchange]:
    """``make_exchange(**overrides)``: BTC/USDT, 10,000 USDT and 1 BTC, no fees, whole fills."""

    def make(**overrides: Any) -> SimulatedExchange:
        kwargs: dict[str, Any] = {
            "markets": {"BTC/USDT": BTC_USDT},
            "balances": {"USDT": 1_000_000, "BTC": 100_000_000},
            "partial_fill": None,
            "clock": clock,
        }
        kwargs.update(overrides)
        return SimulatedExchange(**kwargs)

    return make
