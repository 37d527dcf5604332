"""A position profile's recovery rebuilds its reservations and reports any difference.

Issue 4 / seed 000: after the replay and the exchange reconciliation, both reservations are
recomputed from the pending orders and open positions and compared with what the books carried.
"""

from __future__ import annotations

from typing import Any

import pytest

from actors.events import EventSink
from actors.position_profile import PositionProfile, PositionProfileConfig, position_factory
from messages import InvariantViolated, OpenPosition
from tests.actors.conftest import MARKETS, MAX_FEE_RATE, PRICE, QTY, USDT, new_exchange


def reconciled_profile(tamper: int) -> tuple[PositionProfile, list[Any]]:
    exchange = new_exchange()
    # The entry rests: reconciliation finds it open, with no trades.
    exchange.advance(PRICE * 2, symbol="BTC/USDT")
    config = PositionProfileConfig(
        quote=USDT, allocated_capital=10_000_000, markets=MARKETS, max_fee_rate=MAX_FEE_RATE
    )
    profile = position_factory(config, exchange=exchange, events=EventSink())(
        "p1", None, lambda cid: None
    )
    assert isinstance(profile, PositionProfile)
    profile.handle(
        OpenPosition(
            message_id="sig-1",
            ts_ns=1,
            profile_id="p1",
            signal_id="s1",
            symbol="BTC/USDT",
            position_id="pos-1",
            qty=QTY,
            limit_price=PRICE,
        )
    )
    assert len(profile.ledger.orders) == 1
    profile.take_events()
    # A books' reservation counter that no longer matches its records (as a corrupt but
    # well-formed snapshot, or a bug, would leave it).
    profile.ledger._reserved_for_orders += tamper
    profile.reconcile()
    return profile, profile.take_events()


def test_reservations_equal_to_the_records_are_not_reported() -> None:
    profile, events = reconciled_profile(tamper=0)
    assert [e for e in events if isinstance(e, InvariantViolated)] == []
    order = next(iter(profile.ledger.orders.values()))
    assert profile.ledger.reserved_for_orders == order.reserved


@pytest.mark.parametrize("tamper", [5, -5])
def test_a_difference_is_reported_and_the_rebuilt_reservations_kept(tamper: int) -> None:
    profile, events = reconciled_profile(tamper=tamper)
    order = next(iter(profile.ledger.orders.values()))
    assert profile.ledger.reserved_for_orders == order.reserved
    violations = [e for e in events if isinstance(e, InvariantViolated)]
    assert len(violations) == 1
    assert f"orders {order.reserved + tamper} -> {order.reserved}" in violations[0].detail
    profile.ledger.check_invariants()
