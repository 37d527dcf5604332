"""Bad input to the grid book: exact error messages, and the books identical afterwards."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from accounting.grid_funds import GridBook
from messages import (
    CapflowError,
    DuplicateOrder,
    InsufficientCapital,
    InvalidAmount,
    InvalidFill,
    InvalidMessage,
    OverFill,
    Side,
    StateError,
    UnknownOrder,
)
from tests.accounting.test_grid_support import make_book, make_fill, open_window


def scenario() -> GridBook:
    """Example grid with its window open (buy p1-g3-0, p1-g2-1; sell p1-g6-2, p1-g7-3), the
    sell p1-g7-3 canceled, and a buy placement "b1" on slot 1 in flight."""
    book = make_book()
    open_window(book)
    book.begin_cancel("p1-g7-3")
    book.confirm_cancel("p1-g7-3")
    book.begin_placement(1, 200, "b1")
    return book


def sell_fill(book: GridBook, **kw: Any) -> Any:
    return book.apply_fill(make_fill(book.orders["p1-g6-2"], trade_id="t1", **kw))


def buy_fill(book: GridBook, **kw: Any) -> Any:
    return book.apply_fill(make_fill(book.orders["p1-g3-0"], trade_id="t1", **kw))


CASES: list[tuple[str, Callable[[GridBook], object], type[CapflowError], str]] = [
    # fills
    ("unknown order", lambda b: sell_fill(b, qty=1, client_order_id="nope"), UnknownOrder,
     r"no order nope in profile p1"),
    ("over-fill", lambda b: sell_fill(b, qty=801), OverFill,
     r"fill qty 801 exceeds remaining 800 of order p1-g6-2"),
    ("fill on a VIRTUAL slot", lambda b: b.apply_fill(make_fill(
        b.orders["p1-g6-2"], trade_id="t1", qty=1, client_order_id="p1-g7-3")), InvalidFill,
     r"fill t1 is for order p1-g7-3, which is canceled; it holds no slot"),
    ("wrong market", lambda b: sell_fill(b, qty=1, symbol="BTS/EUR"), InvalidFill,
     r"fill t1 is for BTS/EUR, order p1-g6-2 trades BTS/USD"),
    ("wrong side", lambda b: sell_fill(b, qty=1, side=Side.BUY), InvalidFill,
     r"fill t1 is a buy fill, order p1-g6-2 is a sell order"),
    ("fee in the sold asset", lambda b: sell_fill(b, qty=100, fee=1, fee_asset="BTS"),
     InvalidFill,
     r"fill t1 charges its fee in BTS, expected USD, the asset the sell order receives"),
    ("fee above proceeds", lambda b: sell_fill(b, qty=1, fee=2), InvalidFill,
     r"fill t1 fee 2 exceeds the 1 USD received"),
    ("cost outside bounds", lambda b: sell_fill(b, qty=100, cost=5), InvalidFill,
     r"fill t1 cost 5 is outside \[101, 102\] for qty 100 at 1\.015037"),
    ("sell below its limit", lambda b: sell_fill(b, qty=100, price=Decimal("1.01")),
     InvalidFill, r"fill t1 price 1\.01 is below the sell limit 1\.015037"),
    ("buy above its limit", lambda b: buy_fill(b, qty=100, price=Decimal("0.99")),
     InvalidFill, r"fill t1 price 0\.99 is above the buy limit 0\.985038"),
    ("other exchange order", lambda b: sell_fill(b, qty=1, order_id="x-other"), InvalidFill,
     r"fill t1 names exchange order x-other, order p1-g6-2 is xp1-g6-2"),
    ("not a fill", lambda b: b.apply_fill({"qty": 1}), InvalidMessage,  # type: ignore[arg-type]
     r"expected a Fill, got dict"),
    # placements
    ("float size", lambda b: b.begin_placement(8, 1.5, "c1"), InvalidAmount,  # type: ignore[arg-type]
     r"size must be an int of minor units, got float 1\.5"),
    ("negative size", lambda b: b.begin_placement(8, -1, "c1"), InvalidAmount,
     r"size must not be negative, got -1"),
    ("zero size", lambda b: b.begin_placement(8, 0, "c1"), InvalidAmount,
     r"size must be positive, got 0"),
    ("more than available", lambda b: b.begin_placement(8, 601, "c1"), InsufficientCapital,
     r"slot 8 needs 401 more BTS but only 400 is available"),
    ("below 10 % of ideal", lambda b: b.begin_placement(8, 19, "c1"), InvalidAmount,
     r"order size 19 for slot 8 is below the minimum 20 \(0\.10 of ideal 200\)"),
    ("spread slot", lambda b: b.begin_placement(4, 10, "c1"), StateError,
     r"slot 4 is in the spread; orders go on buy or sell slots"),
    ("slot holds an order", lambda b: b.begin_placement(6, 10, "c1"), StateError,
     r"slot 6 already holds order p1-g6-2"),
    ("slot in flight", lambda b: b.begin_placement(1, 10, "c1"), StateError,
     r"slot 1 already holds order b1"),
    ("no such slot", lambda b: b.begin_placement(10, 10, "c1"), UnknownOrder,
     r"no slot 10 in profile p1 \(slots 0\.\.9\)"),
    ("bool slot", lambda b: b.begin_placement(True, 10, "c1"), InvalidMessage,
     r"slot index must be an int, got bool"),
    ("id in use", lambda b: b.begin_placement(8, 100, "p1-g3-0"), DuplicateOrder,
     r"client order id p1-g3-0 is already used"),
    ("id of a closed order", lambda b: b.begin_placement(8, 100, "p1-g7-3"), DuplicateOrder,
     r"client order id p1-g7-3 is already used"),
    ("empty id", lambda b: b.begin_placement(8, 100, ""), InvalidMessage,
     r"client_order_id must be a non-empty string of <= 200 chars, got ''"),
    # confirmations, cancels, earmarks
    ("confirm unknown", lambda b: b.confirm_placement("nope", "x"), UnknownOrder,
     r"no order nope in profile p1"),
    ("reject an open order", lambda b: b.reject_placement("p1-g6-2"), StateError,
     r"order p1-g6-2 is open; only in flight rejects"),
    ("cancel in flight", lambda b: b.begin_cancel("b1"), StateError,
     r"order b1 is in flight; cancel it once it is confirmed"),
    ("cancel unknown", lambda b: b.begin_cancel("nope"), UnknownOrder,
     r"no order nope in profile p1"),
    ("confirm a cancel never begun", lambda b: b.confirm_cancel("p1-g6-2"), StateError,
     r"order p1-g6-2 is open; begin_cancel first"),
    ("resize a spread slot", lambda b: b.resize_virtual(4, 1), StateError,
     r"slot 4 is in the spread; its size stays 0"),
    ("resize an order's slot", lambda b: b.resize_virtual(6, 1), StateError,
     r"slot 6 holds order p1-g6-2; it cannot resize"),
    ("resize beyond available", lambda b: b.resize_virtual(8, 601), InsufficientCapital,
     r"slot 8 needs 401 more BTS but only 400 is available"),
    ("resize negative", lambda b: b.resize_virtual(8, -5), InvalidAmount,
     r"size must not be negative, got -5"),
    ("rotate to the other side", lambda b: b.begin_rotation("p1-g6-2", 0, 50, "r1", seq=None),
     StateError, r"slot 0 is not a sell slot"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_input_is_refused_and_changes_nothing(
    call: Callable[[GridBook], object], error: type[CapflowError], message: str
) -> None:
    book = scenario()
    before = book.to_state()
    with pytest.raises(error, match=rf"^{message}$"):
        call(book)
    assert book.to_state() == before
    book.check_invariants()


def test_buy_fill_costing_more_than_remains_is_an_over_fill() -> None:
    book = make_book(
        quote_total=15000,
        budget_quote=15000,
        center_price=Decimal("100"),
        min_price=Decimal("95"),
        max_price=Decimal("105"),
    )
    book.begin_placement(3, 986, "b3")  # 10 BTS at 98.503756
    book.confirm_placement("b3", "xb3")
    for n in range(8):  # each 1 BTS costs ceil(98.50) = 99: 194 USD left for 2 BTS
        book.apply_fill(make_fill(book.orders["b3"], trade_id=f"t{n}", qty=1, cost=99))
    before = book.to_state()
    with pytest.raises(OverFill, match=r"^fill cost 198 exceeds remaining 194 of order b3$"):
        book.apply_fill(make_fill(book.orders["b3"], trade_id="t9", qty=2, cost=198))
    assert book.to_state() == before


def test_a_rejected_order_cannot_be_confirmed_later() -> None:
    book = scenario()
    book.reject_placement("b1")
    before = book.to_state()
    with pytest.raises(StateError, match=r"^order b1 was rejected; it cannot be confirmed$"):
        book.confirm_placement("b1", "x1")
    assert book.to_state() == before
