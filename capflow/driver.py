"""The driver of ``capflow run``: moves the market, pumps fills, fires signals, samples books.

One thread (the caller's) runs the loop; the profiles run on their own actor threads and call
the exchange themselves. Each step: one price step on the exchange, the trades it delivered
(duplicates included) submitted as fills, the step's signals submitted, and now and then a
``PriceTick`` and a sample of every profile's books. The loop is bounded by a step count and
by wall time, and sleeps between steps: it is a driver, not a benchmark harness.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from typing import Any

from capflow.run_setup import World
from capflow.run_signals import SignalGenerator
from exchange import random_walk, trade_to_fill
from messages import FillApplied, Message, PriceTick

#: Relative volatility of one random-walk step (uniform in ±vol).
WALK_VOL = Decimal("0.0015")
#: The walk turns back once it is this far (relatively) from its start.
WALK_BAND = Decimal("0.1")
_WALK_CHUNK = 1024


class PricePath(Iterator[Decimal]):
    """An endless price path: a user's prices replayed in order (looping), or a seeded walk.

    The walk is :func:`exchange.random_walk`, generated lazily in chunks seeded from ``seed``
    and the chunk's index, so the same seed gives the same path however long the run. A chunk
    that would carry the price further outside ``start * (1 ± band)`` is mirrored (in log
    space, around its first price), so a long run stays within the grids' range.
    """

    def __init__(
        self,
        *,
        seed: int,
        start: Decimal,
        tick: Decimal,
        replay: Sequence[Decimal] | None = None,
        vol: Decimal = WALK_VOL,
        band: Decimal = WALK_BAND,
    ) -> None:
        self._seed, self._start, self._tick, self._vol = seed, start, tick, vol
        self._low, self._high = start / (1 + band), start * (1 + band)
        self._replay = list(replay) if replay else None
        self._chunks = itertools.count()
        self._buffer: list[Decimal] = []
        self._last = start
        self._index = 0

    def __next__(self) -> Decimal:
        if self._replay is not None:
            price = self._replay[self._index % len(self._replay)]
            self._index += 1
            return price
        if self._index == len(self._buffer):
            self._buffer = self._chunk()
            self._index = 0
        price = self._buffer[self._index]
        self._index += 1
        self._last = price
        return price

    def _chunk(self) -> list[Decimal]:
        seed = self._seed * 1_000_003 + next(self._chunks)
        last = self._last
        path = random_walk(seed, last, _WALK_CHUNK, self._vol, tick=self._tick)
        end = path[-1]
        if (end > self._high and end > last) or (end < self._low and end < last):
            with localcontext() as ctx:
                ctx.prec = 34
                path = [max(self._tick, (last * last / p).quantize(self._tick)) for p in path]
        return path


class FillCounter:
    """Event-sink listener: fills booked and duplicates recognised, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.applied = 0
        self.duplicates = 0

    def on_event(self, event: Message) -> None:
        if isinstance(event, FillApplied):
            with self._lock:
                if event.duplicate:
                    self.duplicates += 1
                else:
                    self.applied += 1

    def snapshot(self) -> tuple[int, int]:
        """``(applied, duplicates)`` so far."""
        with self._lock:
            return self.applied, self.duplicates


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """One look at the run: every profile's books, the price and the counters."""

    elapsed: float
    price: Decimal
    books: dict[str, dict[str, Any]]
    fills_applied: int
    duplicates: int
    fills_per_s: float
    rejections: int


@dataclass(slots=True, kw_only=True)
class DriverStats:
    """What the loop did."""

    steps: int = 0
    trades_delivered: int = 0
    signals: int = 0
    ticks: int = 0
    elapsed: float = 0.0
    samples: list[Sample] = field(default_factory=list)


class Driver:
    """Runs the market for ``duration`` seconds of wall time (or ``max_steps`` steps).

    Args:
        world: the run's exchange, runtime and profiles (runtime started).
        prices: the price path.
        signals: the position profiles' signals.
        fills: the fill counter subscribed to the world's event sink.
        duration: seconds of wall time.
        step_interval: seconds slept after each step.
        max_steps: stop after this many steps even if time is left (default: as many as the
            duration holds at ``step_interval``).
        tick_every: a ``PriceTick`` every this many steps.
        sample_every: seconds between samples of the books (0: never sample).
        on_sample: called with each sample (live progress).
    """

    def __init__(
        self,
        world: World,
        prices: Iterator[Decimal],
        signals: SignalGenerator,
        fills: FillCounter,
        *,
        duration: float,
        step_interval: float = 0.002,
        max_steps: int | None = None,
        tick_every: int = 10,
        sample_every: float = 0.25,
        on_sample: Callable[[Sample], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.world = world
        self._prices = prices
        self.signals = signals
        self._fills = fills
        self._duration = duration
        self._interval = step_interval
        self._tick_every = tick_every
        self._sample_every = sample_every
        self._on_sample = on_sample
        self._clock = clock
        self._sleep = sleep
        if max_steps is None:
            max_steps = int(duration / step_interval) + 1 if step_interval > 0 else 10**9
        self.max_steps = max_steps
        self.stats = DriverStats()
        self.price = world.setup.start_price

    def run(self) -> DriverStats:
        """The loop; returns when the time is up or the step budget is spent."""
        runtime, symbol = self.world.runtime, self.world.market.symbol
        start = self._clock()
        deadline = start + self._duration
        next_sample = start
        stats = self.stats
        while stats.steps < self.max_steps and self._clock() < deadline:
            self.price = next(self._prices)
            self.world.exchange.advance(self.price)
            self.pump()
            now_ns = time.time_ns()
            signals = self.signals.step(self.price, now_ns)
            stats.signals += len(signals)
            if stats.steps % self._tick_every == 0:
                tick = PriceTick(
                    message_id=f"tick-{stats.steps}", ts_ns=now_ns, symbol=symbol, price=self.price
                )
                runtime.submit(*signals, tick)
                stats.ticks += 1
            else:
                runtime.submit(*signals)
            stats.steps += 1
            now = self._clock()
            if self._sample_every > 0 and now >= next_sample:
                self.sample(now - start)
                next_sample = now + self._sample_every
            self._sleep(self._interval)
        stats.elapsed = self._clock() - start
        return stats

    def pump(self) -> int:
        """Submit every trade the feed delivered since the last pump; returns how many."""
        trades = self.world.exchange.drain_fills()
        if trades:
            self.world.runtime.submit(*[trade_to_fill(t) for t in trades])
            self.stats.trades_delivered += len(trades)
        return len(trades)

    def finish(self, timeout: float = 60.0) -> None:
        """No more signals or price steps: submit the last fills and wait until all applied.

        Resting orders stay on the exchange; nothing fills them any more.
        """
        self.pump()
        self.world.runtime.drain(timeout=timeout)

    def sample(self, elapsed: float) -> Sample:
        """Ask every profile for its books (a few Hz at most) and record a sample."""
        books = self.world.runtime.books()
        applied, duplicates = self._fills.snapshot()
        previous = self.stats.samples[-1] if self.stats.samples else None
        rate = 0.0
        if previous is not None and elapsed > previous.elapsed:
            rate = (applied - previous.fills_applied) / (elapsed - previous.elapsed)
        counts = self.world.events.counts()
        sample = Sample(
            elapsed=elapsed,
            price=self.price,
            books=books,
            fills_applied=applied,
            duplicates=duplicates,
            fills_per_s=rate,
            rejections=counts.get("ReservationRejected", 0),
        )
        self.stats.samples.append(sample)
        if self._on_sample is not None:
            self._on_sample(sample)
        return sample
