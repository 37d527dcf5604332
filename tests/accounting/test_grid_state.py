"""Grid book state: plain data that round-trips to an equal book; corrupt data is refused."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from accounting.grid_funds import GridBook
from accounting.grid_planner import RotateOrder, apply_action
from messages import CorruptSnapshot
from tests.accounting.test_grid_support import make_book, make_fill, open_window, order_on


def busy_book() -> GridBook:
    """A book with every kind of state: open, partial, in flight, canceling, a pending
    rotation, closed orders, trade ids, owed fees and cache funds."""
    book = make_book(quote_total=1700, op_fee=1, op_fee_asset="USD", fee_reservation_ops=2)
    open_window(book)
    book.apply_fill(make_fill(order_on(book, 6), trade_id="t1", qty=100))  # partial sell
    book.apply_fill(make_fill(order_on(book, 3), trade_id="t2", qty=50))  # partial buy
    book.begin_placement(8, 200, "in-flight")
    apply_action(
        book, RotateOrder(order_id=order_on(book, 7).order_id, slot=9, size=100,
                          client_order_id="rot-1", seq=7)
    )  # fmt: skip
    book.begin_cancel(order_on(book, 2).order_id)
    return book


def is_plain(value: object) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(is_plain(v) for v in value)
    return value is None or isinstance(value, bool | int | str)


def test_state_is_plain_data_and_round_trips() -> None:
    book = busy_book()
    state = book.to_state()
    assert is_plain(state)
    assert json.loads(json.dumps(state)) == state
    rebuilt = GridBook.from_state(json.loads(json.dumps(state)))
    assert rebuilt == book
    assert rebuilt.to_state() == state
    assert rebuilt.recalculate_funds() == book.recalculate_funds()
    assert rebuilt.pending_rotations == book.pending_rotations
    assert rebuilt.next_seq == 8


def test_state_carries_decimals_as_strings() -> None:
    state = busy_book().to_state()
    assert state["config"]["center_price"] == "1"
    assert state["slots"][0]["price"] == "0.955781"
    assert {o["status"] for o in state["orders"]} == {"open", "in_flight", "canceling"}
    assert state["pending_rotations"] == [
        {"cancel_order_id": "p1-g7-3", "side": "sell", "slot": 9, "size": 100,
         "client_order_id": "rot-1"}
    ]  # fmt: skip


def test_books_differ_when_their_state_differs() -> None:
    book, other = busy_book(), busy_book()
    assert book == other
    other.resize_virtual(0, 99)
    assert book != other
    assert book != "a book"


def _set(path: tuple[Any, ...], value: object) -> Callable[[dict[str, Any]], None]:
    def mutate(state: dict[str, Any]) -> None:
        target = state
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda state: state.pop(key)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_set(("version",), 2), r"grid state version 2 is not 1"),
        (_drop("slots"), r"grid state is not a valid book: KeyError\('slots'\)"),
        (_set(("balances", "USD", "total"), 1.5), r".*total must be an int of minor units.*"),
        (_set(("balances", "USD", "total"), 1699), r".*asset USD: total != free \+ committed.*"),
        (_set(("slots", 0, "price"), "0.95"), r".*slot 0 is slot 0 at 0\.95.*"),
        (_set(("slots", 4, "role"), "buy"), r".*slot 4 has role buy with boundary 4.*"),
        (_set(("orders", 2, "remaining"), 1), r".*slot 3 \(partial, size 751\) disagrees with.*"),
        (_set(("boundary",), "4"), r"boundary must be int, got '4'"),
        (_set(("done_orders", "x"), "lost"), r"done_orders holds an unknown reason.*"),
        (_set(("config", "increment"), 0.01), r"increment must be str, got 0\.01"),
    ],
)
def test_corrupt_state_is_refused(mutate: Callable[[dict[str, Any]], None], message: str) -> None:
    state = copy.deepcopy(busy_book().to_state())
    mutate(state)
    with pytest.raises(CorruptSnapshot, match=rf"^{message}$"):
        GridBook.from_state(state)


def test_slot_prices_come_from_the_config() -> None:
    state = busy_book().to_state()
    assert [Decimal(s["price"]) for s in state["slots"]] == list(
        GridBook.from_state(state).geometry.prices
    )
