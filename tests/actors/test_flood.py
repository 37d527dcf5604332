"""One profile flooded with bad input from many threads while two others trade.

The flooded profile's books must come out exactly as they went in; the traders' books must match
an independent recomputation from the exchange's own trade record; every refusal is counted.
"""

from __future__ import annotations

import collections
import functools
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from accounting import PositionLedger, entry_estimate
from actors.events import EventSink
from actors.runtime import Runtime
from exchange import SimulatedExchange
from messages import (
    DecodeError,
    Fill,
    FillApplied,
    InvalidAmount,
    Market,
    OpenPosition,
    Rounding,
    Side,
    decode,
    encode,
)
from tests.actors.conftest import (
    BTC_USDT,
    ETH_USDT,
    MAX_FEE_RATE,
    PRICE,
    QTY,
    Recorder,
    cid,
    close_signal,
    eventually,
    fill_until_closed,
    ledger_of,
    new_exchange,
    open_signal,
    order_exists,
    position_spec,
    reference_apply,
    running,
    start_threads,
    step,
    stored_state,
)

# Every test here runs on each way of scheduling the profile actors.
pytestmark = pytest.mark.usefixtures("dispatch_mode")

D = Decimal
FLOODED = "flooded"
FLOODERS = 8
PER_KIND = 4  # messages of each kind per flooding thread
ROUNDS = 4


@dataclass(frozen=True, slots=True)
class Trader:
    profile_id: str
    market: Market
    qty: int
    entry: Decimal  # buy limit; a step to ``below`` fills it
    below: Decimal
    exit: Decimal  # sell limit and the step that fills it

    def estimate(self) -> int:
        return entry_estimate(self.market, self.qty, self.entry, MAX_FEE_RATE)


#: The one valid message among the flood: an entry resting far below the market.
VALID = open_signal(FLOODED, "f3", price=D(10_000))

TRADERS = (
    Trader("t1", BTC_USDT, QTY, PRICE, PRICE - 10, PRICE + 10),
    Trader("t2", ETH_USDT, 10 * QTY, D("2000"), D("1999"), D("2001")),
)


def bad_fill(trade_id: str, order_id: str, *, qty: int, price: Decimal, **fields: Any) -> Fill:
    """A well-formed fill (its cost within bounds) for ``order_id`` that the books must refuse."""
    values: dict[str, Any] = {
        "message_id": f"m-{trade_id}",
        "ts_ns": 1,
        "trade_id": trade_id,
        "order_id": f"x-{trade_id}",
        "client_order_id": order_id,
        "symbol": "BTC/USDT",
        "side": Side.BUY,
        "qty": qty,
        "price": price,
        "cost": BTC_USDT.notional(qty, price, Rounding.DOWN),
        "fee": 0,
        "fee_asset": "USDT",
    }
    values.update(fields)
    return Fill(**values)


def float_garbage(kind: int) -> object:
    """Floats where exact amounts belong: every one must die at construction."""
    if kind == 0:
        return open_signal(FLOODED, "float", qty=1.5)  # type: ignore[arg-type]
    if kind == 1:
        return open_signal(FLOODED, "float", price=30000.0)  # type: ignore[arg-type]
    if kind == 2:
        return bad_fill("float", "x", qty=QTY, price=PRICE, cost=300.0)
    return OpenPosition(
        message_id="m",
        ts_ns=1,
        profile_id=FLOODED,
        signal_id="float",
        symbol="BTC/USDT",
        position_id="p",
        qty=QTY,
        estimate=float("nan"),  # type: ignore[arg-type]
    )


def garbage_bytes(rng: random.Random) -> bytes:
    valid = encode(open_signal(FLOODED, "bytes"))
    return rng.choice(
        [
            b"",
            b"\xc1",  # never used by msgpack
            valid[:-3],  # truncated
            valid + b"\x00",  # trailing bytes
            valid.replace(b"open_position", b"open_pasition"),  # unknown tag
            b"\x93\xa4fill\x01\x80",  # a fill with no fields
            rng.randbytes(24),
        ]
    )


class Flood:
    """What the flooding threads sent, by the outcome each message must have."""

    def __init__(self, runtime: Runtime, real_fills: list[Fill]) -> None:
        self.runtime = runtime
        self.real_fills = real_fills
        self.sent: collections.Counter[str] = collections.Counter()
        self.caught: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def kinds(self) -> dict[str, Callable[[str, random.Random], object | None]]:
        completed, resting = cid(FLOODED, "f1"), cid(FLOODED, "f2")
        return {
            # Fill for an order of ours that is no longer pending (through the codec, too).
            "unknown_order": lambda tid, rng: decode(
                encode(bad_fill(tid, completed, qty=1000, price=PRICE))
            ),
            "over_fill": lambda tid, rng: bad_fill(tid, resting, qty=2 * QTY, price=D(10_000)),
            "invalid_fill": lambda tid, rng: bad_fill(
                tid, resting, qty=1000, price=D(10_000), fee=1, fee_asset="ETH"
            ),
            "duplicate": lambda tid, rng: rng.choice(self.real_fills),
            "unroutable": lambda tid, rng: bad_fill(tid, f"cf-nobody-{tid}", qty=1, price=PRICE),
            "unknown_profile": lambda tid, rng: open_signal("ghost", tid),
            "invalid_message": lambda tid, rng: open_signal(FLOODED, tid, symbol="DOGE/USDT"),
            "insufficient_capital": lambda tid, rng: open_signal(FLOODED, tid, qty=1000 * QTY),
            "float": self._float,
            "garbage": self._garbage,
        }

    def _float(self, tid: str, rng: random.Random) -> None:
        try:
            float_garbage(rng.randrange(4))
        except InvalidAmount:
            self._count(self.caught, "float")
            return
        raise AssertionError("a float amount was accepted")

    def _garbage(self, tid: str, rng: random.Random) -> None:
        try:
            decode(garbage_bytes(rng))
        except DecodeError:
            self._count(self.caught, "garbage")
            return
        raise AssertionError("garbage bytes decoded")

    def _count(self, counter: collections.Counter[str], kind: str) -> None:
        with self._lock:
            counter[kind] += 1

    def run(self, thread: int) -> None:
        rng = random.Random(thread)
        kinds = self.kinds()
        plan = [k for k in kinds for _ in range(PER_KIND)]
        rng.shuffle(plan)
        batch: list[object] = []
        for n, kind in enumerate(plan):
            message = kinds[kind](f"bad-{thread}-{n}", rng)
            self._count(self.sent, kind)
            if message is not None:
                batch.append(message)
            if thread == 1 and n == len(plan) // 2:
                batch.append(VALID)  # the flooded profile's own valid traffic, mid-flood
            if len(batch) >= rng.randint(1, 4):
                self.runtime.submit(*batch)
                batch = []
        self.runtime.submit(*batch)


def trade(exchange: SimulatedExchange, runtime: Runtime) -> None:
    """Both traders: enter every round, exit each position once its entry filled completely."""
    unclosed: list[tuple[Trader, int]] = []
    exits: dict[Trader, list[str]] = {t: [] for t in TRADERS}
    for r in range(ROUNDS):
        runtime.submit(
            *(
                open_signal(
                    t.profile_id,
                    f"o{r}",
                    qty=t.qty,
                    price=t.entry,
                    symbol=t.market.symbol,
                    position_id=f"pos{r}",
                )
                for t in TRADERS
            )
        )
        unclosed += [(t, r) for t in TRADERS]
        entries = [cid(t.profile_id, f"o{r}") for t in TRADERS]
        eventually(
            functools.partial(all_exist, exchange, entries),
            what=f"round {r} entries on the exchange",
        )
        for _ in range(3):
            for t in TRADERS:
                runtime.submit(*step(exchange, t.below, t.market.symbol))
        # Exit what filled completely (its fills were all submitted above, so they precede it).
        for t, n in list(unclosed):
            if exchange.fetch_order(cid(t.profile_id, f"o{n}"))["status"] == "closed":
                unclosed.remove((t, n))
                runtime.submit(
                    close_signal(
                        t.profile_id,
                        f"c{n}",
                        position_id=f"pos{n}",
                        price=t.exit,
                        symbol=t.market.symbol,
                    )
                )
                exits[t].append(cid(t.profile_id, f"c{n}"))
        for t in TRADERS:
            runtime.submit(*step(exchange, t.exit, t.market.symbol))
    for t in TRADERS:
        fill_until_closed(exchange, runtime, exits[t], price=t.exit, symbol=t.market.symbol)


def all_exist(exchange: SimulatedExchange, client_order_ids: list[str]) -> bool:
    return all(order_exists(exchange, c) for c in client_order_ids)


BOOK_FIELDS = (
    "reserved_for_orders",
    "reserved_for_positions",
    "realized_pnl",
    "fees_paid",
    "pending_orders",
    "open_positions",
)


def recompute(exchange: SimulatedExchange, trader: Trader) -> tuple[dict[str, Any], int]:
    """The trader's books from the exchange's authoritative record alone; and its round trips.

    Every exit sold its whole position (so the last slice released the rest of the basis):
    realized PnL is proceeds net of fees minus the whole basis, with no pro-rata rounding.
    """
    trades = collections.defaultdict(list)
    for t in exchange.fetch_my_trades():
        trades[t["clientOrderId"]].append(t)
    books = dict.fromkeys(BOOK_FIELDS, 0)
    round_trips = 0
    for r in range(ROUNDS):
        entry, exit_ = cid(trader.profile_id, f"o{r}"), cid(trader.profile_id, f"c{r}")
        buys, sells = trades[entry], trades[exit_]
        assert {b["fee"]["currency"] for b in buys} <= {trader.market.base.symbol}
        basis = sum(b["cost"] for b in buys)  # fees in base: the position gets less instead
        if exchange.fetch_order(entry)["status"] == "open":
            books["reserved_for_orders"] += trader.estimate() - basis
            books["pending_orders"] += 1
        if sells:
            assert exchange.fetch_order(exit_)["status"] == "closed"
            held = sum(b["amount"] - b["fee"]["cost"] for b in buys)
            assert sum(s["amount"] for s in sells) == held
            books["realized_pnl"] += sum(s["cost"] - s["fee"]["cost"] for s in sells) - basis
            books["fees_paid"] += sum(s["fee"]["cost"] for s in sells)
            round_trips += 1
        elif buys:
            books["reserved_for_positions"] += basis
            books["open_positions"] += 1
    allocated = 1_000_000
    available = (
        allocated
        - books["reserved_for_orders"]
        - books["reserved_for_positions"]
        + books["realized_pnl"]
    )
    summary = {
        "kind": "position",
        "profile_id": trader.profile_id,
        "allocated_capital": allocated,
        "available": available,
        "halted": False,
        **books,
    }
    return summary, round_trips


def test_flooded_profile_is_untouched_while_others_trade_exactly(
    events: EventSink, recorder: Recorder
) -> None:
    exchange = new_exchange(maker_fee=D("0.001"), seed=11)
    specs = [position_spec(p, exchange=exchange, events=events) for p in (FLOODED, "t1", "t2")]
    with running(specs, events=events) as runtime:
        # The flooded profile's own valid traffic: one filled entry, one resting far below.
        runtime.submit(open_signal(FLOODED, "f1"), open_signal(FLOODED, "f2", price=D(10_000)))
        runtime.drain()
        real_fills = fill_until_closed(exchange, runtime, [cid(FLOODED, "f1")], price=PRICE - 1)
        runtime.drain()
        before = stored_state(runtime, FLOODED)
        assert len(before["applied_trade_ids"]) == len(real_fills) > 0
        assert [o["client_order_id"] for o in before["orders"]] == [cid(FLOODED, "f2")]

        flood = Flood(runtime, real_fills)
        errors = start_threads(
            1 + FLOODERS, lambda i: trade(exchange, runtime) if i == 0 else flood.run(i)
        )
        assert errors == []
        runtime.drain()

        # The flooded profile: exactly as before, plus its one valid signal.
        flooded = PositionLedger.from_state(before)
        reference_apply(flooded, VALID)
        assert stored_state(runtime, FLOODED) == flooded.to_state()
        assert exchange.fetch_order(cid(FLOODED, "f3"))["status"] == "open"
        sent = flood.sent
        assert all(n == FLOODERS * PER_KIND for n in sent.values())
        assert flood.caught == {"float": sent["float"], "garbage": sent["garbage"]}
        duplicates = recorder.of(FillApplied, profile_id=FLOODED, duplicate=True)
        assert len(duplicates) == sent["duplicate"]
        assert runtime.inspect()["parked"] == sent["unroutable"]

        # Every refusal counted by reason, and nothing else refused anywhere (traders included).
        assert events.reasons() == {
            "FillRejected": {
                "unknown_order": sent["unknown_order"],
                "over_fill": sent["over_fill"],
                "invalid_fill": sent["invalid_fill"],
                "unroutable": sent["unroutable"],
            },
            "ReservationRejected": {
                "unknown_profile": sent["unknown_profile"],
                "invalid_message": sent["invalid_message"],
                "insufficient_capital": sent["insufficient_capital"],
            },
        }
        assert events.count("InvariantViolated") == events.count("DeadLettered") == 0

        # The traders: their books are what the exchange's trade record says.
        books = runtime.books()
        for trader in TRADERS:
            expected, round_trips = recompute(exchange, trader)
            assert round_trips >= 1, trader  # round 0 filled within 10 steps, then exited
            assert books[trader.profile_id] == expected, trader
        for pid in (FLOODED, "t1", "t2"):
            ledger_of(runtime, pid)  # every invariant holds
        exchange.check_invariants()
        info = runtime.inspect()["profiles"]
        assert {p: v["incarnation"] for p, v in info.items()} == {FLOODED: 1, "t1": 1, "t2": 1}
