"""The end-of-run verifier on hand-made trades: worked examples, and that it can fail."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest

from capflow.run_setup import MARKET
from capflow.run_signals import SentOrder
from capflow.run_verify import Profiles, comparable, differences, owner, verify
from exchange import Order, Trade
from messages import Side

PROFILES = Profiles(
    market=MARKET,
    grids={"grid1": {"BTC": 1_000_000, "USDT": 50_000}, "grid10": {"BTC": 0, "USDT": 0}},
    positions={"sig1": 100_000},
    max_fee_rate=Decimal("0.002"),
)


def trade(tid: str, cid: str, side: Side, qty: int, price: str, *, cost: int, fee: int) -> Trade:
    currency = "BTC" if side is Side.BUY else "USDT"
    return {
        "id": tid,
        "order": f"O-{cid}",
        "clientOrderId": cid,
        "timestamp": 1,
        "symbol": "BTC/USDT",
        "side": side,
        "takerOrMaker": "maker",
        "price": Decimal(price),
        "amount": qty,
        "cost": cost,
        "fee": {"cost": fee, "currency": currency},
    }


def open_order(cid: str, side: Side, qty: int, price: str) -> Order:
    return {
        "id": f"O-{cid}",
        "clientOrderId": cid,
        "timestamp": 1,
        "lastTradeTimestamp": None,
        "symbol": "BTC/USDT",
        "type": "limit",
        "side": side,
        "price": Decimal(price),
        "amount": qty,
        "filled": 0,
        "remaining": qty,
        "cost": 0,
        "status": "open",
        "fee": {"cost": 0, "currency": "BTC"},
        "trades": [],
    }


def sent(signal: str, position: str, side: Side, qty: int | None, limit: str) -> SentOrder:
    return SentOrder(
        profile_id="sig1",
        signal_id=signal,
        position_id=position,
        side=side,
        qty=qty,
        limit_price=Decimal(limit),
    )


SENT = {
    "cf-sig1-o1": sent("o1", "p1", Side.BUY, 1_000_000, "30000"),
    "cf-sig1-c2": sent("c2", "p1", Side.SELL, None, "31000"),
    "cf-sig1-o3": sent("o3", "p2", Side.BUY, 100_000, "29000"),
    "cf-sig1-x4": sent("x4", "p4", Side.BUY, 10**9, "30000"),  # refused: never on the exchange
}
TRADES = [
    trade("T1", "grid1-g3-0", Side.BUY, 100_000, "29000", cost=2_900, fee=100),
    # entry of 0.01 BTC at 30000 reserves 30000 + ceil(30000 * 0.002) = 30060
    trade("T2", "cf-sig1-o1", Side.BUY, 400_000, "30000", cost=12_000, fee=400),
    trade("T3", "cf-sig1-o1", Side.BUY, 600_000, "30000", cost=18_000, fee=600),
    trade("T4", "grid1-g9-1", Side.SELL, 200_000, "31000", cost=6_200, fee=7),
    # sells a third of 999_000: releases 30000 * 333000 // 999000 = 10000 of the basis
    trade("T5", "cf-sig1-c2", Side.SELL, 333_000, "31000", cost=10_323, fee=11),
]
OPEN = [
    open_order("grid1-g2-2", Side.BUY, 50_000, "28500"),
    open_order("cf-sig1-o3", Side.BUY, 100_000, "29000"),  # reserves 2900 + 6
]
#: What the runtime's books should say, worked out by hand (see the comments above).
BOOKS = {
    "grid1": {
        "kind": "grid",
        "open_orders": 1,
        "funds": {
            "BTC": {"total": 1_000_000 + 100_000 - 100 - 200_000, "free": 7},
            "USDT": {"total": 50_000 - 2_900 + 6_200 - 7, "free": 7},
        },
    },
    "grid10": {
        "kind": "grid",
        "open_orders": 0,
        "funds": {"BTC": {"total": 0}, "USDT": {"total": 0}},
    },
    "sig1": {
        "kind": "position",
        "allocated_capital": 100_000,
        "realized_pnl": 10_323 - 11 - 10_000,
        "fees_paid": 11,
        "reserved_for_orders": 2_906,
        "reserved_for_positions": 20_000,
        "available": 100_000 - 2_906 - 20_000 + 312,
        "pending_orders": 1,
        "open_positions": 1,
        "positions": {"p1": {"qty": 666_000, "cost": 20_000}},
    },
}


def test_books_worked_out_by_hand_verify() -> None:
    result = verify(BOOKS, TRADES, OPEN, SENT, PROFILES)
    assert result.mismatches == {}
    assert result.unattributed == []
    assert result.ok
    assert result.recomputed["sig1"]["positions"] == {"p1": {"qty": 666_000, "cost": 20_000}}
    assert result.recomputed["grid1"]["total"] == {"BTC": 899_900, "USDT": 53_293}


@pytest.mark.parametrize(
    ("pid", "path"),
    [
        ("grid1", ("funds", "BTC", "total")),
        ("grid1", ("funds", "USDT", "total")),
        ("grid1", ("open_orders",)),
        ("sig1", ("realized_pnl",)),
        ("sig1", ("reserved_for_orders",)),
        ("sig1", ("reserved_for_positions",)),
        ("sig1", ("available",)),
        ("sig1", ("fees_paid",)),
        ("sig1", ("positions", "p1", "qty")),
        ("sig1", ("positions", "p1", "cost")),
    ],
)
def test_one_unit_off_anywhere_is_a_mismatch(pid: str, path: tuple[str, ...]) -> None:
    books = copy.deepcopy(BOOKS)
    node: Any = books[pid]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] += 1
    result = verify(books, TRADES, OPEN, SENT, PROFILES)
    assert not result.ok
    assert list(result.mismatches) == [pid]
    (line,) = result.mismatches[pid]
    assert line.startswith(".".join(path if path[0] != "funds" else ("total", path[1])) + ":")


def test_a_missing_position_a_missing_profile_and_a_stray_trade_are_mismatches() -> None:
    books = copy.deepcopy(BOOKS)
    books["sig1"]["positions"] = {}
    del books["grid10"]
    stray = trade("T9", "someone-else-1", Side.BUY, 1, "30000", cost=1, fee=0)
    result = verify(books, [*TRADES, stray], OPEN, SENT, PROFILES)
    assert result.unattributed == ["T9"]
    assert result.mismatches["grid10"] == ["no books (profile not live)"]
    assert result.mismatches["sig1"] == [
        "positions.p1: books None, recomputed {'qty': 666000, 'cost': 20000}"
    ]


def test_a_type_change_is_a_mismatch_even_when_equal() -> None:
    assert differences({"a": 1}, {"a": 1}) == []
    assert differences({"a": True}, {"a": 1}) == ["a: books True, recomputed 1"]
    assert differences({"a": "1"}, {"a": 1}) == ["a: books '1', recomputed 1"]


def test_an_exit_without_a_position_cannot_be_explained() -> None:
    result = verify(BOOKS, [TRADES[4]], [], SENT, PROFILES)
    assert "exit trade T5 of cf-sig1-c2 does not fit position p1" in result.mismatches["sig1"]


@pytest.mark.parametrize(
    ("cid", "who"),
    [
        ("grid1-g3-0", "grid1"),
        ("grid10-g3-17", "grid10"),
        ("grid2-g3-0", None),  # no such profile
        ("cf-sig1-o1", "sig1"),
        ("xx-sig1-o1", None),  # another prefix
        ("cf-sig2-o1", None),
        ("grid1-x3-0", None),
        ("O000123", None),
    ],
)
def test_owner_comes_from_the_client_order_id_alone(cid: str, who: str | None) -> None:
    assert owner(cid, PROFILES) == who


def test_comparable_keeps_only_what_is_recomputed() -> None:
    assert comparable(BOOKS["grid1"]) == {
        "kind": "grid",
        "total": {"BTC": 899_900, "USDT": 53_293},
        "open_orders": 1,
    }
    assert "open_positions" not in comparable(BOOKS["sig1"])
