"""Builders for the durable-runtime tests (this module holds no tests).

One grid profile and two position profiles share a simulated exchange account; a fixed script
of signal and price phases drives them. The script is deterministic — same exchange seed, same
calls in the same order, so the same orders, trades and books — as long as the runtime is
drained after every phase and a signal phase speaks to one profile only (two profiles placing
orders at once would race for the exchange's order ids). A run with restarts, crashes or store
outages must end with exactly the books of :func:`reference` (a run without any), and every
profile must hold exactly the exchange's trades of its own orders (:func:`check_against_exchange`).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import threading
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, cast

import pykka

from accounting import GridBook, OrderStatus, PositionLedger
from actors.events import EventSink
from actors.grid_profile import grid_factory
from actors.position_profile import PositionProfileConfig, position_factory
from actors.profile import HandlerFactory
from actors.runtime import Runtime
from actors.supervisor import ProfileSpec, RestartPolicy
from capflow.run_setup import MARKET, Setup, grid_profile_config
from exchange import Exchange, SimulatedExchange, StepClock, Trade, trade_to_fill
from messages import (
    ClosePosition,
    ExchangeUnavailable,
    FillApplied,
    Message,
    OpenPosition,
)
from persistence import JournalStore, MemoryJournalStore

GRID = grid_profile_config(0, Setup(grid_quote=1500_00))
POSITION = PositionProfileConfig(
    quote=MARKET.quote,
    allocated_capital=2000_00,
    markets={MARKET.symbol: MARKET},
    max_fee_rate=Decimal("0.001"),
)
GRIDS = ("g1",)
POSITIONS = ("s1", "s2")
PROFILES = (*GRIDS, *POSITIONS)
HOLDER = "rt"
#: Restart almost at once: tests never wait on a wall-clock backoff.
FAST_RESTARTS = RestartPolicy(backoff_base=0.001, backoff_max=0.005)
#: The exchange's settings in every run (in process and hosted): fees, partial fills, and a
#: feed that delivers about a third of the trades twice.
EXCHANGE_SETTINGS: dict[str, Any] = {
    "maker_fee": Decimal("0.001"),
    "duplicate_rate": Decimal("0.3"),
}
SEED = 5


def account() -> dict[str, int]:
    """The account holds exactly the profiles' claims."""
    return {
        MARKET.quote.symbol: GRID.quote_total + len(POSITIONS) * POSITION.allocated_capital,
        MARKET.base.symbol: GRID.base_total,
    }


def claims(profile_id: str) -> dict[str, int]:
    if profile_id in GRIDS:
        return {MARKET.quote.symbol: GRID.quote_total, MARKET.base.symbol: GRID.base_total}
    return {MARKET.quote.symbol: POSITION.allocated_capital}


def new_exchange(seed: int = SEED) -> SimulatedExchange:
    """The scripted exchange, in process (its clock counts calls: deterministic timestamps)."""
    return SimulatedExchange([MARKET], account(), clock=StepClock(), seed=seed, **EXCHANGE_SETTINGS)


def profile_specs(exchange: Exchange, events: EventSink) -> list[ProfileSpec]:
    specs = []
    for pid in PROFILES:
        if pid in GRIDS:
            factory = grid_factory(GRID, exchange=exchange, events=events)
        else:
            factory = position_factory(POSITION, exchange=exchange, events=events)
        specs.append(
            ProfileSpec(
                profile_id=pid,
                factory=cast(HandlerFactory, factory),
                symbols=frozenset({MARKET.symbol}),
                claims=claims(pid),
            )
        )
    return specs


def durable_runtime(
    exchange: Exchange,
    events: EventSink,
    journal: JournalStore,
    *,
    holder: str = HOLDER,
    **options: Any,
) -> Runtime:
    """A durable runtime (not started) of every profile on ``journal``."""
    settings: dict[str, Any] = {"policy": FAST_RESTARTS, **options}
    return Runtime(
        profile_specs(exchange, events),
        events=events,
        journal=journal,
        holder=holder,
        balances={"main": account()},
        **settings,
    )


class Runtimes:
    """Starts runtimes and stops every one of them at the end of the test, whatever happens."""

    def __init__(self) -> None:
        self._started: list[Runtime] = []

    def start(self, runtime: Runtime) -> Runtime:
        self._started.append(runtime)
        return runtime.start()

    def stop_all(self) -> None:
        for runtime in reversed(self._started):
            runtime.stop()
        pykka.ActorRegistry.stop_all(block=True, timeout=10)


# -- the script ------------------------------------------------------------------------------------


def open_signal(
    profile_id: str, signal_id: str, price: str, *, qty: int = 1_000_000
) -> OpenPosition:
    return OpenPosition(
        message_id=f"m-{profile_id}-{signal_id}",
        ts_ns=1,
        profile_id=profile_id,
        signal_id=signal_id,
        symbol=MARKET.symbol,
        position_id=f"pos-{signal_id}",
        qty=qty,
        limit_price=Decimal(price),
    )


def close_signal(profile_id: str, signal_id: str, position_id: str, price: str) -> ClosePosition:
    return ClosePosition(
        message_id=f"m-{profile_id}-{signal_id}",
        ts_ns=1,
        profile_id=profile_id,
        signal_id=signal_id,
        symbol=MARKET.symbol,
        position_id=position_id,
        limit_price=Decimal(price),
    )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Phase:
    """Submit ``signals`` (to one profile), or step the price and submit the feed's fills."""

    signals: tuple[Message, ...] = ()
    price: Decimal | None = None


def _script() -> tuple[Phase, ...]:
    # Prices are all different, so a run resumed after a kill can tell whether a step happened.
    def steps(prices: str) -> list[Phase]:
        return [Phase(price=Decimal(p)) for p in prices.split()]

    return (
        Phase(signals=(open_signal("s1", "a", "29900"), open_signal("s1", "b", "29800"))),
        Phase(signals=(open_signal("s2", "a", "29850"),)),
        *steps("29950 29700 29500 29900 30300"),
        Phase(signals=(close_signal("s1", "c", "pos-a", "30100"),)),
        Phase(signals=(close_signal("s2", "c", "pos-a", "30150"), open_signal("s2", "d", "30000"))),
        *steps("30500 30650 30050 29800 29600"),
    )


SCRIPT = _script()


def run_phase(phase: Phase, runtime: Runtime, exchange: Any) -> None:
    """Do one phase (the caller drains the runtime afterwards)."""
    if phase.price is not None:
        exchange.advance(phase.price, MARKET.symbol)
        submit_fills(runtime, exchange.drain_fills())
    else:
        runtime.submit(*phase.signals)


def resume_phase(phase: Phase, runtime: Runtime, exchange: Any) -> None:
    """Do a phase that a killed process may have done in part: idempotently.

    Signals are journaled under their message id, fills under their trade id, so submitting
    them again is harmless; a price step is taken only if the exchange is not there yet.
    """
    if phase.price is not None and exchange.price(MARKET.symbol) == phase.price:
        submit_fills(runtime, exchange.drain_fills())
    else:
        run_phase(phase, runtime, exchange)


def submit_fills(runtime: Runtime, trades: Iterable[Trade]) -> None:
    fills = [trade_to_fill(t) for t in trades]
    if fills:
        runtime.submit(*fills)


def run_script(
    runtime: Runtime, exchange: Any, phases: Sequence[Phase] = SCRIPT, *, first: int = 0
) -> None:
    for phase in phases[first:]:
        run_phase(phase, runtime, exchange)
        runtime.drain()


# -- observing -------------------------------------------------------------------------------------


class AppliedFills:
    """Counts the non-duplicate ``FillApplied`` events per (profile, trade id), over sinks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()

    def sink(self) -> EventSink:
        """A new sink (one per runtime incarnation) whose fills are counted here."""
        sink = EventSink(keep=10)
        sink.subscribe(self._on_event)
        return sink

    def _on_event(self, event: Message) -> None:
        if isinstance(event, FillApplied) and not event.duplicate:
            with self._lock:
                self.counts[(event.profile_id, event.trade_id)] += 1

    def twice(self) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(k for k, n in self.counts.items() if n > 1)


def states(store: JournalStore) -> dict[str, dict[str, Any]]:
    """Every profile's committed state (each must have one)."""
    snapshots = store.load_many(PROFILES)
    assert sorted(snapshots) == sorted(PROFILES), f"snapshots of {sorted(snapshots)} only"
    return {pid: snapshots[pid].state for pid in PROFILES}


def owner_of(client_order_id: str) -> str:
    """Whose order this is, from the deterministic client order ids."""
    if client_order_id.startswith("cf-"):
        return client_order_id.split("-")[1]
    return client_order_id.split("-", maxsplit=1)[0]


def check_against_exchange(state: Mapping[str, Mapping[str, Any]], trades: list[Trade]) -> None:
    """Each profile applied exactly the exchange's trades of its orders, and its books add up.

    An independent recomputation from the exchange's authoritative record: the trade ids in the
    books are those of the profile's orders, and a grid's totals are its initial totals moved
    by exactly those trades (amounts, costs and fees).
    """
    by_owner: dict[str, list[Trade]] = collections.defaultdict(list)
    for trade in trades:
        by_owner[owner_of(trade["clientOrderId"])].append(trade)
    base, quote = MARKET.base.symbol, MARKET.quote.symbol
    for pid in GRIDS:
        book = GridBook.from_state(state[pid]["book"])  # checks every invariant
        mine = by_owner[pid]
        assert sorted(book.trade_ids) == sorted(t["id"] for t in mine), pid
        moved = {base: GRID.base_total, quote: GRID.quote_total}
        for t in mine:
            sign = 1 if t["side"] == "buy" else -1
            moved[base] += sign * t["amount"]
            moved[quote] -= sign * t["cost"]
            moved[t["fee"]["currency"]] -= t["fee"]["cost"]
        assert {a: b.total for a, b in book.balances.items()} == moved, pid
    for pid in POSITIONS:
        ledger = PositionLedger.from_state(state[pid])  # checks every invariant
        assert sorted(ledger.to_state()["applied_trade_ids"]) == sorted(
            t["id"] for t in by_owner[pid]
        ), pid
    assert set(by_owner) <= set(PROFILES), f"trades of unknown owners: {sorted(by_owner)}"


def check_orders(state: Mapping[str, Mapping[str, Any]], exchange: Any) -> None:
    """The books' open orders are exactly the exchange's, with the same terms.

    An order the exchange holds and no book knows would trade behind the books' back (and
    lock funds they count as free); a book order the exchange does not hold reserves for
    nothing.
    """
    known: dict[str, tuple[Any, ...]] = {}
    for pid in GRIDS:
        book = GridBook.from_state(state[pid]["book"])
        for oid, order in book.orders.items():
            assert order.status is not OrderStatus.IN_FLIGHT, f"{oid} still in doubt"
            if order.status is OrderStatus.OPEN:
                terms = (order.side.value, order.price, order.qty, order.qty - order.filled_qty)
                known[oid] = terms
    for pid in POSITIONS:
        for order in state[pid]["orders"]:
            known[order["client_order_id"]] = ("", None, None, None)
    held = {}
    for order in exchange.fetch_open_orders(MARKET.symbol):
        held[order["clientOrderId"]] = (
            order["side"],
            order["price"],
            order["amount"],
            order["remaining"],
        )
    assert sorted(held) == sorted(known), "open orders: exchange vs books"
    for oid, terms in known.items():
        if terms[0]:  # a grid order: the same terms too
            assert held[oid] == terms, oid


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Reference:
    """What a run of the whole script without restarts ends with."""

    books: dict[str, dict[str, Any]]
    states: dict[str, dict[str, Any]]
    trades: list[Trade]
    applied: int


@functools.cache
def reference(seed: int = SEED) -> Reference:
    """The script once, in process, no restarts (computed once per test session and seed)."""
    exchange = new_exchange(seed)
    applied = AppliedFills()
    store = MemoryJournalStore(partitions=4)
    runtime = durable_runtime(exchange, applied.sink(), store).start()
    try:
        runtime.drain()
        run_script(runtime, exchange)
        books = runtime.books()
    finally:
        runtime.stop()
    assert not applied.twice()
    trades = exchange.fetch_my_trades()
    assert len(applied.counts) == len(trades)
    return Reference(books=books, states=states(store), trades=trades, applied=len(applied.counts))


class LossyExchange:
    """An exchange whose order requests can be lost on the way, or their replies.

    ``lose = "request"``: ``create_order`` raises ``ExchangeUnavailable`` and the exchange never
    hears of the order; ``"reply"``: the order is created, then the reply is lost. While
    either is set, looking orders up or canceling fails too (the exchange is unreachable).
    """

    def __init__(self, inner: SimulatedExchange) -> None:
        self.inner = inner
        self.lose: str | None = None

    def create_order(self, *args: Any, **kwargs: Any) -> Any:
        if self.lose == "reply":
            self.inner.create_order(*args, **kwargs)
        if self.lose is not None:
            raise ExchangeUnavailable(f"order request lost ({self.lose})")
        return self.inner.create_order(*args, **kwargs)

    def fetch_order(self, *args: Any, **kwargs: Any) -> Any:
        self._reachable()
        return self.inner.fetch_order(*args, **kwargs)

    def cancel_order(self, *args: Any, **kwargs: Any) -> Any:
        self._reachable()
        return self.inner.cancel_order(*args, **kwargs)

    def _reachable(self) -> None:
        if self.lose is not None:
            raise ExchangeUnavailable("exchange unreachable")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
