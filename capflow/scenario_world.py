"""What a scenario runs against: a runtime of real profile actors on a simulated exchange.

Deterministic by construction: a logical clock instead of the wall clock, whole (or fixed-size)
fills by default, one seeded random generator in the exchange, and after every step the runtime
is drained and the exchange's trades are pumped back into it until nothing moves.

Two scenario tools sit between the profiles and the exchange: :class:`GatedExchange` can take the
order-entry or cancel API down while the fill feed keeps working, and each profile's handler is
wrapped so that ``Runtime.books()`` also returns its full state, read through its own mailbox.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import threading
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from actors.events import EventSink
from actors.grid_profile import GridProfileConfig, grid_factory
from actors.position_profile import PositionProfileConfig, position_factory
from actors.profile import ProfileHandler
from actors.runtime import Runtime
from actors.supervisor import ProfileSpec
from capflow.scenario_spec import PositionDef, ProfileDef, Scenario
from capflow.scenario_yaml import InvalidScenario
from exchange import Balance, Exchange, Order, OrderType, SimulatedExchange, Trade, trade_to_fill
from messages import (
    ExchangeUnavailable,
    Fill,
    FillApplied,
    InvalidConfig,
    InvariantViolated,
    Market,
    Message,
    Side,
)
from persistence import MemoryStore

ACCOUNT = "main"
STATE_KEY = "_scenario_state"
#: Rounds of "drain the runtime, pump the exchange's new trades" before a step is called stuck.
MAX_PUMPS = 100
DRAIN_TIMEOUT = 30.0


class LogicalClock:
    """Integer nanoseconds that advance by one per call: same calls, same timestamps."""

    def __init__(self, start: int = 1_700_000_000_000_000_000) -> None:
        self._lock = threading.Lock()
        self._ticks = itertools.count(start)

    def __call__(self) -> int:
        with self._lock:
            return next(self._ticks)


class GatedExchange:
    """The exchange as the profiles see it; a scenario can take order entry or cancels down.

    While down, the call raises :class:`messages.ExchangeUnavailable` before reaching the
    exchange, exactly like an unreachable exchange; the fill feed (read by the scenario runner
    from the exchange itself) keeps working.
    """

    def __init__(self, inner: SimulatedExchange) -> None:
        self.inner = inner
        self.create_up = True
        self.cancel_up = True

    def load_markets(self) -> dict[str, Market]:
        return self.inner.load_markets()

    def create_order(  # noqa: PLR0917 - ccxt's positional signature
        self,
        symbol: str,
        type: OrderType,
        side: Side | str,
        amount: int,
        price: Decimal | None = None,
        params: Mapping[str, object] | None = None,
    ) -> Order:
        if not self.create_up:
            raise ExchangeUnavailable("order entry is down (scenario step `exchange`)")
        return self.inner.create_order(symbol, type, side, amount, price, params)

    def cancel_order(self, id: str, symbol: str | None = None) -> Order:
        if not self.cancel_up:
            raise ExchangeUnavailable("order cancels are down (scenario step `exchange`)")
        return self.inner.cancel_order(id, symbol)

    def fetch_order(self, id: str, symbol: str | None = None) -> Order:
        return self.inner.fetch_order(id, symbol)

    def fetch_open_orders(self, symbol: str | None = None) -> list[Order]:
        return self.inner.fetch_open_orders(symbol)

    def fetch_my_trades(
        self, symbol: str | None = None, since: int | None = None, limit: int | None = None
    ) -> list[Trade]:
        return self.inner.fetch_my_trades(symbol, since, limit)

    def fetch_balance(self) -> Balance:
        return self.inner.fetch_balance()


class EventRecorder:
    """Counts the runtime's events by type, reason and profile; each distinct event once.

    A profile replaying its log after a crash publishes again the events of the messages it
    applied after its last checkpoint: the same fields, a new message id and timestamp. Those
    replays are one fact, so an event is identified by its fields other than ``message_id`` and
    ``ts_ns`` (the runner gives every message it submits a unique id, so two deliveries of
    one trade stay two events). ``FillApplied`` counts under the reason ``applied`` or
    ``duplicate``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: set[tuple[Any, ...]] = set()
        self._counts: collections.Counter[tuple[str, str | None, str | None]] = (
            collections.Counter()
        )
        self._trades: dict[str, list[str]] = collections.defaultdict(list)
        self._violations: list[str] = []

    def __call__(self, event: Message) -> None:
        name = type(event).__name__
        identity = (
            name,
            *(
                (f.name, getattr(event, f.name))
                for f in dataclasses.fields(event)
                if f.name not in ("message_id", "ts_ns")
            ),
        )
        reason = getattr(event, "reason", None)
        if isinstance(event, FillApplied):
            reason = "duplicate" if event.duplicate else "applied"
        profile = getattr(event, "profile_id", None)
        with self._lock:
            if identity in self._seen:
                return
            self._seen.add(identity)
            self._counts[(name, reason if isinstance(reason, str) else None, profile)] += 1
            if isinstance(event, FillApplied) and not event.duplicate:
                self._trades[event.profile_id].append(event.trade_id)
            if isinstance(event, InvariantViolated):
                self._violations.append(f"profile {event.profile_id}: {event.detail}")

    def counts(self, profile: str | None = None) -> dict[str, dict[str, Any]]:
        """``{type: {"total": n, "reasons": {reason: n}}}``, of one profile or of all."""
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            for (name, reason, pid), n in sorted(self._counts.items(), key=str):
                if profile is not None and pid != profile:
                    continue
                entry = out.setdefault(name, {"total": 0, "reasons": {}})
                entry["total"] += n
                if reason is not None:
                    entry["reasons"][reason] = entry["reasons"].get(reason, 0) + n
        return out

    def trades(self, profile: str) -> list[str]:
        """Trade ids the profile applied (duplicates excluded), in the order it applied them."""
        with self._lock:
            return list(self._trades.get(profile, ()))

    def violations(self) -> list[str]:
        """Every ``InvariantViolated`` event's profile and detail."""
        with self._lock:
            return list(self._violations)


class _Observed:
    """A profile's handler whose summary also carries its whole state (for expectations)."""

    def __init__(self, inner: ProfileHandler) -> None:
        self._inner = inner

    def handle(self, payload: object) -> None:
        self._inner.handle(payload)

    def to_state(self) -> dict[str, Any]:
        return self._inner.to_state()

    def summary(self) -> dict[str, Any]:
        return {**self._inner.summary(), STATE_KEY: self._inner.to_state()}

    def halt(self, reason: str) -> None:
        self._inner.halt(reason)

    def take_events(self) -> list[Any]:
        return self._inner.take_events()

    def publish_events(self, events: list[Any]) -> None:
        self._inner.publish_events(events)

    def reconcile(self) -> None:
        self._inner.reconcile()

    def resume(self) -> None:
        self._inner.resume()


class World:
    """The runtime, exchange, store and event recorder of one scenario run."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.clock = LogicalClock()
        settings = scenario.exchange
        self.exchange = SimulatedExchange(
            scenario.markets,
            scenario.account,
            maker_fee=settings.maker_fee,
            taker_fee=settings.taker_fee,
            duplicate_rate=settings.duplicate_rate,
            partial_fill=settings.partial_fill,
            seed=settings.seed,
            clock=self.clock,
        )
        self.gate = GatedExchange(self.exchange)
        self.recorder = EventRecorder()
        self.events = EventSink()
        self.events.subscribe(self.recorder)
        self.store = MemoryStore()
        self.runtime = Runtime(
            [self._spec(p) for p in scenario.profiles],
            store=self.store,
            events=self.events,
            balances={ACCOUNT: scenario.account},
            clock=self.clock,
        )
        self._ids = itertools.count(1)

    def _spec(self, profile: ProfileDef) -> ProfileSpec:
        exchange: Exchange = self.gate
        if isinstance(profile, PositionDef):
            inner = position_factory(
                PositionProfileConfig(
                    quote=profile.quote,
                    allocated_capital=profile.allocated_capital,
                    markets=profile.markets,
                    max_fee_rate=profile.max_fee_rate,
                ),
                exchange=exchange,
                events=self.events,
                clock=self.clock,
            )
            symbols = frozenset(profile.markets)
            claims = {profile.quote.symbol: profile.allocated_capital}
        else:
            inner = grid_factory(
                GridProfileConfig(
                    grid=profile.config,
                    base_total=profile.base_total,
                    quote_total=profile.quote_total,
                ),
                exchange=exchange,
                events=self.events,
                clock=self.clock,
            )
            market = profile.config.market
            symbols = frozenset({market.symbol})
            claims = {
                market.base.symbol: profile.base_total,
                market.quote.symbol: profile.quote_total,
            }

        def build(
            profile_id: str, state: dict[str, Any] | None, register: Callable[[str], None]
        ) -> ProfileHandler:
            return _Observed(inner(profile_id, state, register))

        return ProfileSpec(
            profile_id=profile.id,
            factory=build,
            symbols=symbols,
            account_id=ACCOUNT,
            claims=claims,
        )

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the runtime (every profile bootstraps) and let it settle."""
        try:
            self.runtime.start()
        except InvalidConfig as exc:
            raise InvalidScenario("profiles", f"the runtime refuses them: {exc}") from None
        self.settle()

    def stop(self) -> None:
        """Stop every actor."""
        self.runtime.stop()

    def next_id(self, kind: str) -> str:
        """A message id never used before in this run."""
        return f"{kind}-{next(self._ids)}"

    def take_fills(self) -> list[Fill]:
        """The exchange's newly delivered trades as ``Fill`` messages (each with a fresh id)."""
        return [
            trade_to_fill(trade, message_id=self.next_id(f"fill-{trade['id']}"))
            for trade in self.exchange.drain_fills()
        ]

    def settle(self) -> None:
        """Drain the runtime, pump new trades into it, repeat until nothing moves.

        Raises:
            TimeoutError: the runtime did not settle, or kept producing trades.
        """
        for _ in range(MAX_PUMPS):
            self.runtime.drain(timeout=DRAIN_TIMEOUT)
            fills = self.take_fills()
            if not fills:
                return
            self.runtime.submit(*fills)
        raise TimeoutError(f"the exchange still produced trades after {MAX_PUMPS} rounds")

    def states(self) -> dict[str, dict[str, Any] | None]:
        """Every profile's whole state: live through its mailbox, else its last checkpoint."""
        books = self.runtime.books()
        out: dict[str, dict[str, Any] | None] = {}
        for profile in self.scenario.profiles:
            state = books.get(profile.id, {}).get(STATE_KEY)
            if state is None:
                checkpoint = self.store.load(profile.id)
                state = None if checkpoint is None else checkpoint.state
            out[profile.id] = state
        return out
