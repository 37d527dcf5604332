"""The position ledger: seed 000's scenarios, every rejection, invariants and snapshots.

Numbers follow the worked example of docs/accounting.md (part 1): BTC at 8 decimals (sat), USDT
at 2 decimals (cents), limit 30 000, fee rate 0.1 %, so 0.01 BTC reserves 30 000 + 30 cents.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgpack
import pytest

from accounting.position import (
    FillOutcome,
    PendingOrder,
    Position,
    PositionLedger,
    entry_estimate,
)
from messages import (
    Asset,
    DuplicateOrder,
    Fill,
    FundInvariantViolation,
    InsufficientCapital,
    InsufficientPosition,
    InvalidAmount,
    InvalidConfig,
    InvalidFill,
    InvalidMessage,
    Market,
    OverFill,
    ProfileHalted,
    Side,
    UnknownOrder,
)

D = Decimal
BUY, SELL = Side.BUY, Side.SELL
USDT = Asset(symbol="USDT", precision=2)
BTC = Asset(symbol="BTC", precision=8)
ETH = Asset(symbol="ETH", precision=8)
BTC_USDT = Market(symbol="BTC/USDT", base=BTC, quote=USDT)
ETH_USDT = Market(symbol="ETH/USDT", base=ETH, quote=USDT)
MARKETS = {m.symbol: m for m in (BTC_USDT, ETH_USDT)}


def new_ledger(allocated: int = 100_000, profile_id: str = "p1") -> PositionLedger:
    return PositionLedger(profile_id, quote=USDT, allocated_capital=allocated, markets=MARKETS)


def reserve(
    ledger: PositionLedger,
    oid: str,
    *,
    side: Side = BUY,
    qty: int = 1_000_000,
    limit: str | None = "30000",
    pid: str = "pos-1",
    symbol: str = "BTC/USDT",
    estimate: int | None = None,
) -> PendingOrder:
    return ledger.reserve_for_order(
        client_order_id=oid,
        symbol=symbol,
        side=side,
        position_id=pid,
        qty=qty,
        limit_price=None if limit is None else D(limit),
        estimate=estimate,
    )


def fill(  # noqa: PLR0917  # positional, so the tables read as rows of numbers
    tid: str,
    oid: str,
    qty: int,
    price: str,
    cost: int,
    fee: int,
    *,
    side: Side = BUY,
    symbol: str = "BTC/USDT",
    fee_asset: str = "USDT",
) -> Fill:
    return Fill(
        message_id=f"m-{tid}",
        ts_ns=1,
        trade_id=tid,
        order_id=f"x{oid}",
        client_order_id=oid,
        symbol=symbol,
        side=side,
        qty=qty,
        price=D(price),
        cost=cost,
        fee=fee,
        fee_asset=fee_asset,
    )


def totals(ledger: PositionLedger) -> tuple[int, int, int, int, int]:
    return (
        ledger.reserved_for_orders,
        ledger.reserved_for_positions,
        ledger.realized_pnl,
        ledger.fees_paid,
        ledger.available,
    )


def rejects(
    ledger: PositionLedger, exc: type[Exception], message: str, call: Callable[[], Any]
) -> None:
    """``call`` raises exactly ``exc(message)`` and leaves the books exactly as they were."""
    before = ledger.to_state()
    with pytest.raises(exc, match=f"^{re.escape(message)}$") as info:
        call()
    assert type(info.value) is exc
    assert ledger.to_state() == before


def make_book() -> PositionLedger:
    """pos-1 open (1 000 000 sat, cost 30 010); entry e-2 pending (3 003); exit x-1 pending."""
    ledger = new_ledger()
    reserve(ledger, "e-1")
    ledger.apply_fill(fill("t-1", "e-1", 400_000, "29950", 11_980, 12))
    ledger.apply_fill(fill("t-2", "e-1", 600_000, "30000", 18_000, 18))
    reserve(ledger, "e-2", qty=100_000, pid="pos-2")
    reserve(ledger, "x-1", side=SELL, qty=400_000, limit="31000")
    assert totals(ledger) == (3_003, 30_010, 0, 30, 66_987)
    return ledger


# -- estimate -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("qty", "limit", "rate", "expected"),
    [
        (1_000_000, "30000", "0.001", 30_030),  # 300.00 USDT + 0.30 fee
        (333_333, "31000", "0.001", 10_334 + 11),  # ceil(10333.323) + ceil(10.334)
        (1, "30000", "0", 1),  # a fraction of a cent still reserves a whole cent
        (1_000_000, "30000", "0.0005", 30_015),
    ],
)
def test_entry_estimate_rounds_notional_and_fee_up(qty, limit, rate, expected):
    assert entry_estimate(BTC_USDT, qty, D(limit), D(rate)) == expected


def test_default_reservation_is_the_entry_estimate_at_the_ledger_fee_rate():
    ledger = PositionLedger(
        "p1", quote=USDT, allocated_capital=100_000, markets=MARKETS, max_fee_rate=D("0.002")
    )
    order = reserve(ledger, "e-1")
    assert order == PendingOrder(
        client_order_id="e-1",
        symbol="BTC/USDT",
        side=BUY,
        position_id="pos-1",
        qty=1_000_000,
        limit_price=D("30000"),
        reserved=30_060,
        filled_qty=0,
    )
    assert ledger.orders == {"e-1": order}
    assert totals(ledger) == (30_060, 0, 0, 0, 69_940)


def test_market_entry_reserves_its_explicit_estimate():
    ledger = new_ledger()
    assert reserve(ledger, "e-1", limit=None, estimate=31_000).reserved == 31_000
    assert ledger.available == 69_000


# -- seed scenario 1: two BUY signals on one profile ----------------------------------------


@pytest.mark.parametrize(
    ("allocated", "second_accepted", "after"),
    [
        (60_060, True, (60_060, 0)),  # room for both: the second sees the first's 30 030
        (60_059, False, (30_030, 30_029)),
        (30_030, False, (30_030, 0)),  # capital for exactly one
    ],
)
def test_second_buy_sees_the_first_reservation(allocated, second_accepted, after):
    ledger = new_ledger(allocated)
    reserve(ledger, "e-a", pid="pos-a")
    assert ledger.available == allocated - 30_030
    if second_accepted:
        reserve(ledger, "e-b", pid="pos-b")
    else:
        rejects(
            ledger,
            InsufficientCapital,
            f"order e-b needs 30030 but only {allocated - 30_030} is available in profile p1",
            lambda: reserve(ledger, "e-b", pid="pos-b"),
        )
    assert (ledger.reserved_for_orders, ledger.available) == after
    ledger.check_invariants()


def test_first_buy_without_capital_is_refused_and_changes_nothing():
    ledger = new_ledger(30_029)
    rejects(
        ledger,
        InsufficientCapital,
        "order e-a needs 30030 but only 30029 is available in profile p1",
        lambda: reserve(ledger, "e-a"),
    )
    assert ledger == new_ledger(30_029)


# -- seed scenario 2: two profiles ----------------------------------------------------------


def test_profiles_are_independent():
    p1, p2 = new_ledger(30_030, "p1"), new_ledger(30_030, "p2")
    untouched = p2.to_state()
    reserve(p1, "e-1")
    p1.apply_fill(fill("t-1", "e-1", 400_000, "29950", 11_980, 12))
    assert p2.to_state() == untouched
    # p1 is out of capital; p2 still has all of its own, and may reuse the same ids.
    rejects(
        p1,
        InsufficientCapital,
        "order e-2 needs 30030 but only 0 is available in profile p1",
        lambda: reserve(p1, "e-2"),
    )
    assert reserve(p2, "e-1").reserved == 30_030
    p2.apply_fill(fill("t-1", "e-1", 1_000_000, "30000", 30_000, 30))
    assert totals(p1) == (18_038, 11_992, 0, 12, 0)
    assert totals(p2) == (0, 30_030, 0, 30, 0)


# -- seed scenario 3: partial entry, partial exit, final close -------------------------------


def test_partial_entry_partial_exit_and_close_return_reservations_to_zero():
    ledger = new_ledger(100_000)
    steps: list[tuple[Callable[[], object], object, tuple[int, int, int, int, int]]] = [
        (lambda: reserve(ledger, "e-1").reserved, 30_030, (30_030, 0, 0, 0, 69_970)),
        (
            lambda: ledger.apply_fill(fill("t-1", "e-1", 400_000, "29950", 11_980, 12)),
            FillOutcome(trade_id="t-1", client_order_id="e-1", applied=True, consumed=11_992),
            (18_038, 11_992, 0, 12, 69_970),
        ),
        (
            lambda: ledger.apply_fill(fill("t-2", "e-1", 600_000, "30000", 18_000, 18)),
            FillOutcome(
                trade_id="t-2",
                client_order_id="e-1",
                applied=True,
                order_completed=True,
                consumed=18_018,
                released=20,
            ),
            (0, 30_010, 0, 30, 69_990),
        ),
        (
            lambda: reserve(ledger, "x-1", side=SELL, limit="31000").reserved,
            0,
            (0, 30_010, 0, 30, 69_990),
        ),
        (
            # released 30 010 * 333 333 // 1 000 000 = 10 003; realized 10 333 - 11 - 10 003
            lambda: ledger.apply_fill(fill("t-3", "x-1", 333_333, "31000", 10_333, 11, side=SELL)),
            FillOutcome(
                trade_id="t-3", client_order_id="x-1", applied=True, released=10_003, realized=319
            ),
            (0, 20_007, 319, 41, 80_312),
        ),
        (
            # the last slice releases the whole remaining 20 007: 21 000 - 21 - 20 007 = 972
            lambda: ledger.apply_fill(fill("t-4", "x-1", 666_667, "31500", 21_000, 21, side=SELL)),
            FillOutcome(
                trade_id="t-4",
                client_order_id="x-1",
                applied=True,
                order_completed=True,
                position_closed=True,
                released=20_007,
                realized=972,
            ),
            (0, 0, 1_291, 62, 101_291),
        ),
    ]
    for call, result, expected in steps:
        assert call() == result
        assert totals(ledger) == expected
        ledger.check_invariants()
    paid = 11_980 + 12 + 18_000 + 18
    received = (10_333 - 11) + (21_000 - 21)
    assert ledger.realized_pnl == received - paid == 1_291
    assert ledger.orders == {}
    assert ledger.positions == {}


def test_partial_fills_keep_the_order_and_position_records_exact():
    ledger = make_book()
    ledger.apply_fill(fill("t-3", "e-2", 40_000, "29000", 1_160, 2))
    assert ledger.orders["e-2"] == PendingOrder(
        client_order_id="e-2",
        symbol="BTC/USDT",
        side=BUY,
        position_id="pos-2",
        qty=100_000,
        limit_price=D("30000"),
        reserved=3_003 - 1_162,
        filled_qty=40_000,
    )
    assert ledger.positions["pos-2"] == Position(
        position_id="pos-2", symbol="BTC/USDT", qty=40_000, cost=1_162
    )
    ledger.apply_fill(fill("t-4", "x-1", 100_000, "31000", 3_100, 4, side=SELL))
    assert ledger.orders["x-1"].filled_qty == 100_000
    assert ledger.positions["pos-1"] == Position(
        position_id="pos-1", symbol="BTC/USDT", qty=900_000, cost=30_010 - 3_001
    )
    assert ledger.sellable_qty("pos-1") == 600_000
    assert ledger.sellable_qty("pos-2") == 40_000
    assert ledger.sellable_qty("pos-9") == 0
    ledger.check_invariants()


def test_entry_adds_to_an_open_position():
    ledger = make_book()
    reserve(ledger, "e-3", qty=10_000)
    ledger.apply_fill(fill("t-3", "e-3", 10_000, "30000", 300, 1))
    assert ledger.positions["pos-1"] == Position(
        position_id="pos-1", symbol="BTC/USDT", qty=1_010_000, cost=30_311
    )
    assert ledger.reserved_for_positions == 30_311


def test_entry_fee_in_the_base_asset_shrinks_the_position_not_the_capital():
    # Binance-style: a buy's fee is taken from the base asset received. The quote paid is just
    # the cost; the position holds qty - fee; fees_paid (a quote figure) does not change.
    ledger = make_book()
    reserve(ledger, "e-3", qty=10_000)
    ledger.apply_fill(fill("t-3", "e-3", 10_000, "30000", 300, 10, fee_asset="BTC"))
    assert ledger.positions["pos-1"] == Position(
        position_id="pos-1", symbol="BTC/USDT", qty=1_009_990, cost=30_310
    )
    assert ledger.reserved_for_positions == 30_310
    assert ledger.fees_paid == 30
    ledger.check_invariants()


@pytest.mark.parametrize(
    ("order", "position"),
    [("e-3", "pos-1"), ("e-2", "pos-2")],
    ids=["position-open", "no-position-yet"],
)
def test_a_base_fee_that_takes_the_whole_trade_books_its_cost_as_a_loss(order, position):
    # A 1-unit slice at a 0.1 % fee charged in base and rounded up: the fee is the whole trade
    # (found by the crash drill, seed 2: such a fill was refused and lost from the books).
    # Nothing is left to hold, so the quote it cost is realized as a loss at once.
    ledger = make_book()
    if order == "e-3":
        reserve(ledger, "e-3", qty=10_000)
    held = ledger.positions.get(position)
    before = totals(ledger)
    orders, positions, pnl = (
        ledger.reserved_for_orders,
        ledger.reserved_for_positions,
        ledger.realized_pnl,
    )
    available = ledger.available

    outcome = ledger.apply_fill(fill("t-9", order, 1, "30000", 1, 1, fee_asset="BTC"))

    assert outcome.applied
    assert outcome.consumed == 1
    assert ledger.positions.get(position) == held  # unchanged, or still not open
    assert ledger.reserved_for_orders == orders - 1  # the reservation paid for it
    assert ledger.reserved_for_positions == positions
    assert ledger.realized_pnl == pnl - 1
    assert ledger.available == available
    assert ledger.orders[order].filled_qty == 1
    assert totals(ledger) != before
    ledger.check_invariants()
    # Applied once: the same trade again is a duplicate, not a second loss.
    assert ledger.apply_fill(fill("t-9", order, 1, "30000", 1, 1, fee_asset="BTC")).duplicate
    assert ledger.realized_pnl == pnl - 1


# -- seed scenario 4: restart rebuild -------------------------------------------------------


def durable_row(ledger: PositionLedger) -> PositionLedger:
    """What survives a restart without the order/position tables: the seed's ledger row."""
    state = ledger.to_state()
    state |= {"orders": [], "positions": [], "reserved_for_orders": 0}
    state["reserved_for_positions"] = 0
    return PositionLedger.from_state(state)


def test_rebuild_from_orders_and_positions_equals_the_incremental_ledger():
    ledger = make_book()
    ledger.apply_fill(fill("t-3", "e-2", 40_000, "29000", 1_160, 2))
    ledger.apply_fill(fill("t-4", "x-1", 100_000, "31000", 3_100, 4, side=SELL))
    restarted = durable_row(ledger)
    assert restarted != ledger
    assert totals(restarted)[:2] == (0, 0)
    restarted.rebuild(reversed(list(ledger.orders.values())), iter(ledger.positions.values()))
    assert restarted == ledger
    restarted.rebuild(list(ledger.orders.values()), list(ledger.positions.values()))
    assert restarted == ledger  # idempotent
    restarted.check_invariants()


def test_rebuild_drops_stale_reservations():
    ledger = make_book()
    # e-2 was cancelled on the exchange while the process was down.
    ledger.rebuild([ledger.orders["x-1"]], ledger.positions.values())
    assert totals(ledger) == (0, 30_010, 0, 30, 69_990)
    with pytest.raises(UnknownOrder, match=r"^order e-2 is not pending in profile p1$"):
        ledger.cancel_order("e-2")
    ledger.check_invariants()


def test_rebuild_keeps_used_ids_and_applied_trades():
    ledger = make_book()
    ledger.rebuild([], [])
    assert totals(ledger) == (0, 0, 0, 30, 100_000)
    rejects(
        ledger,
        DuplicateOrder,
        "client order id e-1 is already used in profile p1",
        lambda: reserve(ledger, "e-1"),
    )
    duplicate = ledger.apply_fill(fill("t-1", "e-1", 400_000, "29950", 11_980, 12))
    assert duplicate.duplicate
    assert not duplicate.applied


def test_rebuild_adds_pending_ids_to_used_ids():
    ledger = new_ledger()
    order = PendingOrder(
        client_order_id="e-7",
        symbol="BTC/USDT",
        side=BUY,
        position_id="pos-7",
        qty=10,
        limit_price=None,
        reserved=50,
    )
    ledger.rebuild([order], [])
    ledger.cancel_order("e-7")
    rejects(
        ledger,
        DuplicateOrder,
        "client order id e-7 is already used in profile p1",
        lambda: reserve(ledger, "e-7"),
    )


def test_rebuild_that_leaves_available_negative_halts():
    ledger = new_ledger(1_000)
    ledger.rebuild([], [Position(position_id="pos-1", symbol="BTC/USDT", qty=5, cost=1_500)])
    assert ledger.halt_reason == "rebuild left available at -500"
    ledger.check_invariants()


def _position(pid: str = "pos-1", symbol: str = "BTC/USDT", qty: int = 100) -> Position:
    return Position(position_id=pid, symbol=symbol, qty=qty, cost=10)


def _order(
    oid: str, *, side: Side = BUY, pid: str = "pos-1", symbol: str = "BTC/USDT", qty: int = 10
) -> PendingOrder:
    return PendingOrder(
        client_order_id=oid,
        symbol=symbol,
        side=side,
        position_id=pid,
        qty=qty,
        limit_price=None,
        reserved=5 if side is BUY else 0,
    )


@pytest.mark.parametrize(
    ("orders", "positions", "message"),
    [
        ([_order("a"), _order("a")], [], "order ids repeat: ['a']"),
        ([], [_position(), _position()], "position ids repeat: ['pos-1']"),
        ([_order("a", symbol="X/USDT")], [], "symbol 'X/USDT' is not a market of the profile"),
        (
            [_order("a", symbol="ETH/USDT")],
            [_position()],
            "position pos-1 trades BTC/USDT, not ETH/USDT",
        ),
        (
            [_order("a", pid="pos-9"), _order("b", pid="pos-9", symbol="ETH/USDT")],
            [],
            "position pos-9 trades BTC/USDT, not ETH/USDT",
        ),
        (
            [_order("a", side=SELL, qty=60), _order("b", side=SELL, qty=41)],
            [_position()],
            "pending exits of position pos-1 sell 101 but it holds 100",
        ),
        (
            [_order("a", side=SELL, pid="pos-9")],
            [_position()],
            "pending exits of position pos-9 sell 10 but it holds 0",
        ),
        (["a"], [], "pending orders must be PendingOrder records, got 'a'"),
        ([], [None], "open positions must be Position records, got None"),
    ],
)
def test_rebuild_rejects_inconsistent_books(orders, positions, message):
    ledger = make_book()
    rejects(ledger, InvalidMessage, message, lambda: ledger.rebuild(orders, positions))


# -- reservation rejections -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        ({"oid": "e-2"}, DuplicateOrder, "client order id e-2 is already used in profile p1"),
        ({"oid": "e-1"}, DuplicateOrder, "client order id e-1 is already used in profile p1"),
        (
            {"oid": ""},
            InvalidMessage,
            "client_order_id must be a non-empty string of <= 200 chars, got ''",
        ),
        (
            {"pid": 7},
            InvalidMessage,
            "position_id must be a non-empty string of <= 200 chars, got 7",
        ),
        (
            {"symbol": "DOGE/USDT"},
            InvalidMessage,
            "symbol 'DOGE/USDT' is not a market of profile p1",
        ),
        ({"symbol": "ETH/USDT"}, InvalidMessage, "position pos-1 trades BTC/USDT, not ETH/USDT"),
        (
            {"symbol": "ETH/USDT", "pid": "pos-2"},
            InvalidMessage,
            "position pos-2 trades BTC/USDT, not ETH/USDT",
        ),
        ({"side": "buy"}, InvalidMessage, "side must be a Side, got 'buy'"),
        ({"qty": 0}, InvalidAmount, "qty must be positive, got 0"),
        ({"qty": -5}, InvalidAmount, "qty must not be negative, got -5"),
        ({"qty": 1.0}, InvalidAmount, "qty must be an int of minor units, got float 1.0"),
        ({"qty": math.nan}, InvalidAmount, "qty must be an int of minor units, got float nan"),
        ({"qty": True}, InvalidAmount, "qty must be an int of minor units, got bool True"),
        ({"limit": "NaN"}, InvalidAmount, "limit_price must be finite, got NaN"),
        ({"limit": "-1"}, InvalidAmount, "limit_price must be positive, got -1"),
        ({"estimate": 0}, InvalidAmount, "estimate must be positive, got 0"),
        ({"estimate": -1}, InvalidAmount, "estimate must not be negative, got -1"),
        (
            {"estimate": 10.0},
            InvalidAmount,
            "estimate must be an int of minor units, got float 10.0",
        ),
        (
            {"estimate": False},
            InvalidAmount,
            "estimate must be an int of minor units, got bool False",
        ),
        ({"limit": None}, InvalidMessage, "market entry order e-9 needs an estimate"),
        (
            {"qty": 3_000_000},
            InsufficientCapital,
            "order e-9 needs 90090 but only 66987 is available in profile p1",
        ),
        (
            {"limit": None, "estimate": 66_988},
            InsufficientCapital,
            "order e-9 needs 66988 but only 66987 is available in profile p1",
        ),
        (
            {"side": SELL, "estimate": 5},
            InvalidMessage,
            "exit order e-9 reserves nothing; got an estimate",
        ),
        (
            {"side": SELL, "qty": 600_001},
            InsufficientPosition,
            "exit e-9 of 600001 exceeds the 600000 sellable of position pos-1",
        ),
        (
            {"side": SELL, "pid": "pos-9"},
            InsufficientPosition,
            "exit e-9 sells position pos-9, which is not open in profile p1",
        ),
        (
            # pos-2 has a pending entry but holds nothing yet
            {"side": SELL, "pid": "pos-2", "qty": 1},
            InsufficientPosition,
            "exit e-9 sells position pos-2, which is not open in profile p1",
        ),
    ],
)
def test_reservation_rejections_leave_the_books_unchanged(kwargs, exc, message):
    ledger = make_book()
    kwargs = {"oid": "e-9"} | kwargs
    rejects(ledger, exc, message, lambda: reserve(ledger, **kwargs))


def test_float_limit_price_is_rejected():
    ledger = make_book()
    call = lambda: ledger.reserve_for_order(  # noqa: E731
        client_order_id="e-9",
        symbol="BTC/USDT",
        side=BUY,
        position_id="pos-1",
        qty=1,
        limit_price=30000.0,  # type: ignore[arg-type]
    )
    rejects(ledger, InvalidAmount, "limit_price must be a Decimal, got float 30000.0", call)


def test_exact_fit_reservations_are_accepted():
    ledger = make_book()
    reserve(ledger, "e-9", limit=None, estimate=66_987)
    reserve(ledger, "x-9", side=SELL, qty=600_000)
    assert ledger.available == 0
    assert ledger.sellable_qty("pos-1") == 0
    ledger.check_invariants()


def test_halted_profile_refuses_entries_but_accepts_exits():
    ledger = make_book()
    ledger.halt("manual")
    ledger.halt("second reason is not kept")
    rejects(
        ledger,
        ProfileHalted,
        "profile p1 is halted (manual); entry e-9 refused",
        lambda: reserve(ledger, "e-9", qty=1),
    )
    assert reserve(ledger, "x-9", side=SELL, qty=1).reserved == 0
    ledger.resume()
    assert not ledger.halted
    assert reserve(ledger, "e-9", qty=1).reserved == 2


def test_halt_needs_a_reason():
    ledger = make_book()
    rejects(
        ledger,
        InvalidMessage,
        "halt reason must be a non-empty str, got ''",
        lambda: ledger.halt(""),
    )


# -- fills ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad_fill", "exc", "message"),
    [
        (
            fill("t-9", "nope", 1, "30000", 0, 0),
            UnknownOrder,
            "fill t-9 names order nope, which is not pending in profile p1",
        ),
        (
            fill("t-9", "e-2", 100_000, "2000", 200, 0, symbol="ETH/USDT"),
            InvalidFill,
            "fill t-9 is a buy of ETH/USDT but order e-2 is a buy of BTC/USDT",
        ),
        (
            fill("t-9", "e-2", 100_000, "30000", 3_000, 3, side=SELL),
            InvalidFill,
            "fill t-9 is a sell of BTC/USDT but order e-2 is a buy of BTC/USDT",
        ),
        (
            fill("t-9", "e-2", 100_000, "30000", 3_000, 3, fee_asset="BNB"),
            InvalidFill,
            "fill t-9 charged its fee in BNB, expected USDT or BTC",
        ),
        (
            fill("t-9", "e-2", 100_000, "30000", 3_000, 100_001, fee_asset="BTC"),
            InvalidFill,
            "fill t-9 fee 100001 BTC exceeds its qty 100000",
        ),
        (
            fill("t-9", "x-1", 100_000, "31000", 3_100, 3, side=SELL, fee_asset="BTC"),
            InvalidFill,
            "fill t-9 charged its fee in BTC, expected USDT",
        ),
        (
            fill("t-9", "e-2", 100_000, "30000", 3_001, 3),
            InvalidFill,
            "fill t-9 cost 3001 is outside [3000, 3000] for qty 100000 at 30000",
        ),
        (
            fill("t-9", "e-2", 100_000, "29999.99", 2_998, 3),
            InvalidFill,
            "fill t-9 cost 2998 is outside [2999, 3000] for qty 100000 at 29999.99",
        ),
        (
            fill("t-9", "e-2", 100_000, "30001", 3_000, 3),
            InvalidFill,
            "fill t-9 price 30001 is through the buy limit 30000 of order e-2",
        ),
        (
            fill("t-9", "x-1", 100_000, "30999", 3_100, 3, side=SELL),
            InvalidFill,
            "fill t-9 price 30999 is through the sell limit 31000 of order x-1",
        ),
        (
            fill("t-9", "e-2", 100_001, "30000", 3_000, 3),
            OverFill,
            "fill qty 100001 exceeds remaining 100000 of order e-2",
        ),
        (
            fill("t-9", "x-1", 400_001, "31000", 12_400, 3, side=SELL),
            OverFill,
            "fill qty 400001 exceeds remaining 400000 of order x-1",
        ),
    ],
)
def test_fill_rejections_leave_the_books_unchanged(bad_fill, exc, message):
    ledger = make_book()
    rejects(ledger, exc, message, lambda: ledger.apply_fill(bad_fill))


def test_apply_fill_needs_a_fill():
    ledger = make_book()
    rejects(
        ledger,
        InvalidMessage,
        "apply_fill needs a Fill, got dict",
        lambda: ledger.apply_fill({"trade_id": "t-9"}),  # type: ignore[arg-type]
    )


def test_overfill_after_a_partial_fill_names_the_remaining_qty():
    ledger = make_book()
    ledger.apply_fill(fill("t-3", "e-2", 40_000, "30000", 1_200, 1))
    rejects(
        ledger,
        OverFill,
        "fill qty 60001 exceeds remaining 60000 of order e-2",
        lambda: ledger.apply_fill(fill("t-4", "e-2", 60_001, "30000", 1_800, 1)),
    )


def test_fills_at_or_better_than_the_limit_are_accepted():
    ledger = make_book()
    ledger.apply_fill(fill("t-3", "e-2", 50_000, "30000", 1_500, 2))
    ledger.apply_fill(fill("t-4", "e-2", 50_000, "25000", 1_250, 2))
    ledger.apply_fill(fill("t-5", "x-1", 100_000, "31000", 3_100, 3, side=SELL))
    ledger.apply_fill(fill("t-6", "x-1", 100_000, "40000", 4_000, 4, side=SELL))
    assert "e-2" not in ledger.orders
    assert ledger.orders["x-1"].filled_qty == 200_000
    ledger.check_invariants()


@pytest.mark.parametrize("completed_first", [False, True])
def test_duplicate_trade_id_is_a_reported_no_op(completed_first):
    ledger = make_book()
    qty = 100_000 if completed_first else 40_000
    first = fill("t-3", "e-2", qty, "30000", qty * 3 // 100, 1)
    assert ledger.apply_fill(first).applied
    assert ("e-2" in ledger.orders) is not completed_first
    before = ledger.to_state()
    # The same trade again, even redelivered with other fields, changes nothing.
    for again in (first, dataclasses.replace(first, message_id="m-again", qty=1, cost=0)):
        assert ledger.apply_fill(again) == FillOutcome(
            trade_id="t-3", client_order_id="e-2", applied=False, duplicate=True
        )
        assert ledger.to_state() == before


def test_entry_overrun_is_booked_and_halts_the_profile():
    ledger = make_book()
    reserve(ledger, "e-9", qty=100_000, pid="pos-9", limit=None, estimate=2_000)
    outcome = ledger.apply_fill(fill("t-9", "e-9", 100_000, "30500", 3_050, 3))
    assert outcome == FillOutcome(
        trade_id="t-9",
        client_order_id="e-9",
        applied=True,
        order_completed=True,
        consumed=3_053,
        overrun=1_053,
    )
    assert ledger.halt_reason == "fill t-9 overran the reservation of order e-9 by 1053"
    assert ledger.positions["pos-9"].cost == 3_053
    # 66 987 - 2 000 reserved - 1 053 overrun
    assert totals(ledger) == (3_003, 33_063, 0, 33, 63_934)
    ledger.check_invariants()
    rejects(
        ledger,
        ProfileHalted,
        "profile p1 is halted (fill t-9 overran the reservation of order e-9 by 1053);"
        " entry e-10 refused",
        lambda: reserve(ledger, "e-10", qty=1),
    )
    ledger.resume()
    reserve(ledger, "e-10", qty=1)


def test_per_fill_rounding_can_overrun_the_estimate_by_one_unit():
    # 3 sat at 30 000 is 0.09 cents: the estimate is ceil(0.09) + ceil(0.001) = 2, but three
    # 1-sat fills each cost ceil(0.03) = 1 cent. The third overruns by 1 and halts the profile.
    ledger = new_ledger(100)
    assert reserve(ledger, "e-1", qty=3).reserved == 2
    outcomes = [ledger.apply_fill(fill(f"t-{i}", "e-1", 1, "30000", 1, 0)) for i in range(3)]
    assert [o.overrun for o in outcomes] == [0, 0, 1]
    assert ledger.halt_reason == "fill t-2 overran the reservation of order e-1 by 1"
    assert totals(ledger) == (0, 3, 0, 0, 97)
    ledger.check_invariants()


def test_fill_that_leaves_available_negative_halts_until_capital_returns():
    ledger = new_ledger(2)
    assert reserve(ledger, "e-1", qty=2).reserved == 2  # ceil(0.0006) + ceil(0.001) cents
    ledger.apply_fill(fill("t-1", "e-1", 2, "30000", 1, 1))
    assert ledger.available == 0
    reserve(ledger, "x-1", side=SELL, qty=1)
    # Proceeds 0 - 1 fee; released pro_rata(2, 1, 2) = 1; realized -2.
    outcome = ledger.apply_fill(fill("t-2", "x-1", 1, "30000", 0, 1, side=SELL))
    assert (outcome.released, outcome.realized) == (1, -2)
    assert totals(ledger) == (0, 1, -2, 2, -1)
    assert ledger.halt_reason == "fill t-2 left available at -1"
    ledger.check_invariants()
    rejects(ledger, ProfileHalted, "profile p1 cannot resume: available is -1", ledger.resume)
    ledger.reallocate(3)
    ledger.resume()
    assert not ledger.halted
    assert ledger.available == 0


# -- cancel, expire, reallocate -------------------------------------------------------------


def test_cancel_releases_the_remaining_reservation():
    ledger = make_book()
    ledger.apply_fill(fill("t-3", "e-2", 40_000, "30000", 1_200, 1))
    assert ledger.cancel_order("e-2") == 3_003 - 1_201
    assert ledger.expire_order("x-1") == 0
    assert ledger.orders == {}
    assert totals(ledger) == (0, 31_211, 0, 31, 68_789)
    ledger.check_invariants()
    rejects(
        ledger,
        DuplicateOrder,
        "client order id e-2 is already used in profile p1",
        lambda: reserve(ledger, "e-2"),
    )


@pytest.mark.parametrize("cancel", ["cancel_order", "expire_order"])
def test_cancel_of_an_unknown_order_is_refused(cancel):
    ledger = make_book()
    rejects(
        ledger,
        UnknownOrder,
        "order e-1 is not pending in profile p1",
        lambda: getattr(ledger, cancel)("e-1"),
    )


@pytest.mark.parametrize(
    ("new", "exc", "message"),
    [
        (33_012, InsufficientCapital, "allocating 33012 to profile p1 would leave available at -1"),
        (-1, InvalidAmount, "allocated_capital must not be negative, got -1"),
        (
            1e6,
            InvalidAmount,
            "allocated_capital must be an int of minor units, got float 1000000.0",
        ),
    ],
)
def test_reallocate_rejections(new, exc, message):
    ledger = make_book()
    rejects(ledger, exc, message, lambda: ledger.reallocate(new))


def test_reallocate_to_the_last_unit():
    ledger = make_book()
    ledger.reallocate(33_013)
    assert (ledger.allocated_capital, ledger.available) == (33_013, 0)
    ledger.reallocate(200_000)
    assert ledger.available == 166_987


# -- construction and records ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        (
            {"markets": {"ETH/BTC": Market(symbol="ETH/BTC", base=ETH, quote=BTC)}},
            InvalidConfig,
            "profile p1 counts in USDT (2 decimals) but market ETH/BTC"
            " is quoted in BTC (8 decimals)",
        ),
        (
            {"markets": {"BTC-USDT": BTC_USDT}},
            InvalidConfig,
            "profile p1 market 'BTC-USDT' is " + repr(BTC_USDT),
        ),
        ({"quote": "USDT"}, InvalidConfig, "profile p1 quote must be an Asset, got 'USDT'"),
        (
            {"allocated_capital": 1.5},
            InvalidAmount,
            "allocated_capital must be an int of minor units, got float 1.5",
        ),
        (
            {"max_fee_rate": D("1.5")},
            InvalidAmount,
            "max_fee_rate must be within [0, 1], got 1.5",
        ),
    ],
)
def test_constructor_rejections(kwargs, exc, message):
    args: dict[str, Any] = {"quote": USDT, "allocated_capital": 10, "markets": MARKETS} | kwargs
    with pytest.raises(exc, match=f"^{re.escape(message)}$"):
        PositionLedger("p1", **args)


@pytest.mark.parametrize(
    ("changes", "exc", "message"),
    [
        ({"filled_qty": 10}, InvalidAmount, "order o-1 filled_qty 10 must be below its qty 10"),
        ({"side": SELL}, InvalidAmount, "exit order o-1 reserves no capital, got reserved 5"),
        ({"reserved": -1}, InvalidAmount, "reserved must not be negative, got -1"),
        ({"qty": 2.0}, InvalidAmount, "qty must be an int of minor units, got float 2.0"),
        ({"limit_price": D("0")}, InvalidAmount, "limit_price must be positive, got 0"),
        ({"side": "sell"}, InvalidMessage, "side must be a Side, got 'sell'"),
        (
            {"position_id": ""},
            InvalidMessage,
            "position_id must be a non-empty string of <= 200 chars, got ''",
        ),
    ],
)
def test_pending_order_validation(changes, exc, message):
    fields: dict[str, Any] = {
        "client_order_id": "o-1",
        "symbol": "BTC/USDT",
        "side": BUY,
        "position_id": "pos-1",
        "qty": 10,
        "limit_price": D("1"),
        "reserved": 5,
    } | changes
    with pytest.raises(exc, match=f"^{re.escape(message)}$"):
        PendingOrder(**fields)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"qty": 0}, "qty must be positive, got 0"),
        ({"cost": -1}, "cost must not be negative, got -1"),
        ({"cost": math.inf}, "cost must be an int of minor units, got float inf"),
    ],
)
def test_position_validation(changes, message):
    fields: dict[str, Any] = {"position_id": "pos-1", "symbol": "BTC/USDT", "qty": 1, "cost": 1}
    with pytest.raises(InvalidAmount, match=f"^{re.escape(message)}$"):
        Position(**(fields | changes))


def test_records_are_frozen():
    order = _order("a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        order.reserved = 0  # type: ignore[misc]
    ledger = make_book()
    with pytest.raises(TypeError):
        ledger.orders["x"] = order  # type: ignore[index]


# -- invariants -----------------------------------------------------------------------------


def test_check_invariants_names_the_profile_every_problem_and_every_component():
    ledger = make_book()
    ledger._reserved_for_orders += 1
    ledger._fees_paid = -1
    message = (
        "profile p1 books do not add up: fees_paid is negative;"
        " reserved_for_orders is not the 3003 reserved by orders"
        " (allocated_capital=100000, reserved_for_orders=3004, reserved_for_positions=30010,"
        " realized_pnl=0, fees_paid=-1, available=66986, halted=False)"
    )
    with pytest.raises(FundInvariantViolation, match=f"^{re.escape(message)}$"):
        ledger.check_invariants()


def _assign(name: str, value: int) -> Callable[[PositionLedger], None]:
    return lambda ledger: setattr(ledger, name, value)


def _corrupt_order(ledger: PositionLedger, **changes: int) -> None:
    for name, value in changes.items():
        object.__setattr__(ledger.orders["e-2"], name, value)


@pytest.mark.parametrize(
    ("corrupt", "problems"),
    [
        (
            _assign("_allocated", -1),
            "allocated_capital is negative; available is negative but the profile is not halted",
        ),
        (
            _assign("_reserved_for_positions", 0),
            "reserved_for_positions is not the 30010 cost of positions",
        ),
        (_assign("_realized_pnl", -66_988), "available is negative but the profile is not halted"),
        (
            lambda b: _corrupt_order(b, filled_qty=100_000),
            "order e-2 has filled_qty 100000 of qty 100000 and reserved 3003",
        ),
        (
            lambda b: object.__setattr__(b.positions["pos-1"], "qty", 0),
            "position pos-1 has qty 0; pending exits of position pos-1 sell 400000 but it holds 0",
        ),
        (
            lambda b: object.__setattr__(b.positions["pos-1"], "qty", 399_999),
            "pending exits of position pos-1 sell 400000 but it holds 399999",
        ),
    ],
)
def test_check_invariants_detects(corrupt, problems):
    ledger = make_book()
    ledger.check_invariants()
    corrupt(ledger)
    pattern = f"^profile p1 books do not add up: {re.escape(problems)} \\(allocated_capital=.*\\)$"
    with pytest.raises(FundInvariantViolation, match=pattern):
        ledger.check_invariants()


def test_negative_available_is_allowed_while_halted():
    ledger = make_book()
    ledger._realized_pnl = -66_988
    ledger.halt("reconciling")
    ledger.check_invariants()


# -- snapshot state -------------------------------------------------------------------------


def _plain(value: object) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or type(value) in (int, str, bool)


def test_state_is_plain_data_and_round_trips_through_msgpack():
    ledger = make_book()
    ledger.halt("manual")
    state = ledger.to_state()
    assert _plain(state)
    assert state["orders"][0]["limit_price"] == "30000"
    restored = PositionLedger.from_state(msgpack.unpackb(msgpack.packb(state), strict_map_key=True))
    assert restored == ledger
    assert restored.to_state() == state
    assert restored.halt_reason == "manual"
    assert restored.orders == ledger.orders
    assert restored.positions == ledger.positions


def test_equality_is_equality_of_state():
    assert make_book() == make_book()
    other = make_book()
    other.cancel_order("e-2")
    assert other != make_book()
    assert make_book() != make_book().to_state()
    with pytest.raises(TypeError):
        hash(make_book())


def test_summary():
    assert make_book().summary() == {
        "profile_id": "p1",
        "allocated_capital": 100_000,
        "reserved_for_orders": 3_003,
        "reserved_for_positions": 30_010,
        "realized_pnl": 0,
        "fees_paid": 30,
        "available": 66_987,
        "halted": False,
        "pending_orders": 2,
        "open_positions": 1,
    }


def _without(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda s: s.pop(key)


def _set(path: tuple[Any, ...], value: object) -> Callable[[dict[str, Any]], None]:
    def change(state: dict[str, Any]) -> None:
        target: Any = state
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


_ORDER_KEYS = (
    "['client_order_id', 'filled_qty', 'limit_price', 'position_id', 'qty', 'reserved',"
    " 'side', 'symbol']"
)


@pytest.mark.parametrize(
    ("change", "exc", "message"),
    [
        (_set(("version",), 2), InvalidMessage, "ledger state version must be 1, got 2"),
        (_set(("version",), True), InvalidMessage, "ledger state version must be 1, got True"),
        (_set(("orders",), {}), InvalidMessage, "orders must be a list, got dict"),
        (_set(("orders", 0), "e-2"), InvalidMessage, "order must be a dict, got str"),
        (
            _without("fees_paid"),
            InvalidMessage,
            "ledger state must have the keys ['allocated_capital', 'applied_trade_ids',"
            " 'fees_paid', 'halt_reason', 'markets', 'max_fee_rate', 'orders', 'positions',"
            " 'profile_id', 'quote', 'realized_pnl', 'reserved_for_orders',"
            " 'reserved_for_positions', 'used_order_ids', 'version'], got ['allocated_capital',"
            " 'applied_trade_ids', 'halt_reason', 'markets', 'max_fee_rate', 'orders',"
            " 'positions', 'profile_id', 'quote', 'realized_pnl', 'reserved_for_orders',"
            " 'reserved_for_positions', 'used_order_ids', 'version']",
        ),
        (
            _set(("orders", 0, "extra"), 1),
            InvalidMessage,
            f"order must have the keys {_ORDER_KEYS}, got ['client_order_id', 'extra',"
            " 'filled_qty', 'limit_price', 'position_id', 'qty', 'reserved', 'side', 'symbol']",
        ),
        (
            _set(("orders", 0, "side"), "hold"),
            InvalidMessage,
            "order side must be 'buy' or 'sell', got 'hold'",
        ),
        (
            _set(("orders", 0, "side"), ["buy"]),
            InvalidMessage,
            "order side must be 'buy' or 'sell', got ['buy']",
        ),
        (
            _set(("orders", 0, "qty"), 1.5),
            InvalidAmount,
            "qty must be an int of minor units, got float 1.5",
        ),
        (
            _set(("orders", 0, "limit_price"), "abc"),
            InvalidMessage,
            "limit_price 'abc' is not a Decimal",
        ),
        (
            _set(("orders", 0, "limit_price"), 30000),
            InvalidMessage,
            "limit_price must be a Decimal string, got 30000",
        ),
        (
            _set(("max_fee_rate",), "NaN"),
            InvalidAmount,
            "max_fee_rate must be a finite Decimal, got Decimal('NaN')",
        ),
        (
            _set(("realized_pnl",), "0"),
            InvalidAmount,
            "realized_pnl must be an int of minor units, got str '0'",
        ),
        (
            _set(("halt_reason",), ""),
            InvalidMessage,
            "halt_reason must be a non-empty str or None, got ''",
        ),
        (
            _set(("used_order_ids",), ["e-1", "e-1"]),
            InvalidMessage,
            "used_order_ids repeat the ids ['e-1']",
        ),
        (
            _set(("applied_trade_ids",), [1]),
            InvalidMessage,
            "applied_trade_ids must hold non-empty strings, got 1",
        ),
        (
            _set(("used_order_ids",), ["e-1", "e-2"]),
            InvalidMessage,
            "pending orders ['x-1'] are not among used_order_ids",
        ),
        (
            _set(("quote", "precision"), 8),
            InvalidMessage,
            "ledger state has an unusable configuration: profile p1 counts in USDT (8 decimals)"
            " but market BTC/USDT is quoted in USDT (2 decimals)",
        ),
        (_set(("positions", 0, "qty"), 0), InvalidAmount, "qty must be positive, got 0"),
        (
            _set(("reserved_for_orders",), 3_004),
            InvalidMessage,
            "ledger state does not add up: profile p1 books do not add up:"
            " reserved_for_orders is not the 3003 reserved by orders (allocated_capital=100000,"
            " reserved_for_orders=3004, reserved_for_positions=30010, realized_pnl=0,"
            " fees_paid=30, available=66986, halted=False)",
        ),
        (
            _set(("orders", 1, "qty"), 1_000_001),
            InvalidMessage,
            "pending exits of position pos-1 sell 1000001 but it holds 1000000",
        ),
    ],
)
def test_from_state_rejects_malformed_data(change, exc, message):
    state = make_book().to_state()
    change(state)
    with pytest.raises(exc, match=f"^{re.escape(message)}$"):
        PositionLedger.from_state(state)


def test_from_state_rejects_non_dicts():
    with pytest.raises(InvalidMessage, match=r"^ledger state must be a dict, got list$"):
        PositionLedger.from_state([])
