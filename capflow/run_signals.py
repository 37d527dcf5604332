"""The position profiles' signals in ``capflow run``: seeded entries, exits, and refusals.

Every order a signal implies is recorded by its deterministic client order id, so the
end-of-run verification knows which position each exchange trade belongs to.
"""

from __future__ import annotations

import itertools
import queue
import random
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from messages import (
    ClosePosition,
    FillApplied,
    Market,
    Message,
    OpenPosition,
    OrderRejected,
    ReservationRejected,
    Side,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SentOrder:
    """What the driver asked a position profile for, by the client order id it implies."""

    profile_id: str
    signal_id: str
    position_id: str
    side: Side
    qty: int | None
    limit_price: Decimal


class SignalGenerator:
    """Seeded trading signals for the position profiles.

    Per step and profile, with probability ``rate``: an entry near the price (a new position,
    or adding to one), an exit of a position whose entries have all filled, or, now and then,
    an entry far too large for the profile's capital (it must be refused with
    ``ReservationRejected``); each profile's first signal is one of those, so every run
    exercises the refusal. What happened to the orders is learned from the event sink
    (:meth:`on_event`): fills complete entries, and a refused exit makes its position eligible
    again.

    Args:
        profiles: the position profiles, by id, with their allocated capital.
        market: the market they trade.
        seed: seeds the generator.
        tick: limit prices are multiples of it.
        order_prefix: the profiles' client order id prefix (``<prefix>-<profile>-<signal>``).
        rate: chance per step and profile of a signal.
        id_tag: put in front of every signal and position id (no ``-``), so that several
            generators over the same profiles (e.g. one per process incarnation of a crash
            drill) never reuse an id.
    """

    def __init__(
        self,
        profiles: dict[str, int],
        market: Market,
        *,
        seed: int,
        tick: Decimal,
        order_prefix: str = "cf",
        rate: float = 0.05,
        id_tag: str = "",
    ) -> None:
        if "-" in id_tag:
            raise ValueError(f"id_tag may not contain '-': {id_tag!r}")
        self._capital = dict(profiles)
        self._market = market
        self._rng = random.Random(f"capflow-signals:{seed}")
        self._tick = tick
        self._prefix = order_prefix
        self._rate = rate
        self._tag = id_tag
        self._ids = itertools.count(1)
        self._news: queue.SimpleQueue[tuple[str, int]] = queue.SimpleQueue()  # (cid, filled)
        self._started: set[str] = set()
        # Per profile, positions entered and not being exited, oldest first.
        self._held: dict[str, list[str]] = {pid: [] for pid in profiles}
        self._entries: dict[str, tuple[str, str]] = {}  # entry cid -> (profile, position)
        self._unfilled: dict[str, int] = {}  # entry cid -> base units not filled yet
        self._pending: dict[tuple[str, str], set[str]] = {}  # position -> unfilled entry cids
        self._filled: set[tuple[str, str]] = set()  # positions with at least one fill
        self._exits: dict[str, tuple[str, str]] = {}  # exit cid -> (profile, position)
        #: every order the signals implied, by client order id (for the verification)
        self.sent: dict[str, SentOrder] = {}
        self.oversized = 0

    def adopt(self, profile_id: str, position_ids: Iterable[str]) -> None:
        """Treat these open, fully entered positions as this generator's (they may be exited)."""
        held = self._held[profile_id]
        for position_id in position_ids:
            if position_id not in held:
                held.append(position_id)
            self._filled.add((profile_id, position_id))

    def on_event(self, event: Message) -> None:
        """Event-sink listener (any thread): fills and refusals of the signals' orders."""
        match event:
            case FillApplied(client_order_id=cid, qty=qty, duplicate=False):
                self._news.put((cid, qty))
            case ReservationRejected(profile_id=pid, signal_id=str(signal)):
                self._news.put((f"{self._prefix}-{pid}-{signal}", 0))
            case OrderRejected(client_order_id=cid):
                self._news.put((cid, 0))

    def step(self, price: Decimal, ts_ns: int) -> list[OpenPosition | ClosePosition]:
        """This step's signals (possibly none)."""
        while True:
            try:
                cid, filled = self._news.get_nowait()
            except queue.Empty:
                break
            if filled:
                self._on_fill(cid, filled)
            else:
                self._on_refusal(cid)
        out: list[OpenPosition | ClosePosition] = []
        for pid in self._capital:
            if self._rng.random() < self._rate:
                out.append(self._signal(pid, price, ts_ns))
        return out

    def _on_fill(self, cid: str, qty: int) -> None:
        if cid not in self._unfilled:
            return  # an exit's fill, or another profile's
        key = self._entries[cid]
        self._filled.add(key)
        self._unfilled[cid] -= qty
        if self._unfilled[cid] <= 0:
            del self._unfilled[cid]
            self._pending[key].discard(cid)

    def _on_refusal(self, cid: str) -> None:
        if cid in self._exits:
            pid, position_id = self._exits.pop(cid)
            self._held[pid].append(position_id)
        elif cid in self._unfilled:
            del self._unfilled[cid]
            key = self._entries[cid]
            self._pending[key].discard(cid)
            held = self._held[key[0]]
            if not self._pending[key] and key not in self._filled and key[1] in held:
                held.remove(key[1])  # it never opened

    def _signal(self, pid: str, price: Decimal, ts_ns: int) -> OpenPosition | ClosePosition:
        n = f"{self._tag}{next(self._ids)}"
        draw = self._rng.random()
        held = self._held[pid]
        first = pid not in self._started
        self._started.add(pid)
        if first or draw < 0.06:  # each profile's first signal is always one too large
            self.oversized += 1
            limit = self._limit(price, Side.BUY)
            qty = max(1, self._market.qty_for(3 * self._capital[pid], limit))
            return self._send(pid, f"x{n}", f"p{n}", Side.BUY, qty, limit, ts_ns)
        closable = [p for p in held if (pid, p) in self._filled and not self._pending.get((pid, p))]
        if closable and draw < 0.5:
            position_id = closable[self._rng.randrange(len(closable))]
            held.remove(position_id)
            self._exits[f"{self._prefix}-{pid}-c{n}"] = (pid, position_id)
            limit = self._limit(price, Side.SELL)
            return self._send(pid, f"c{n}", position_id, Side.SELL, None, limit, ts_ns)
        if held and draw > 0.85:
            position_id = held[self._rng.randrange(len(held))]  # add to an open position
        else:
            position_id = f"p{n}"
            held.append(position_id)
        share = Decimal(self._rng.randint(200, 1200)) / 10_000  # 2-12 % of the capital
        limit = self._limit(price, Side.BUY)
        qty = max(1, self._market.qty_for(int(self._capital[pid] * share), limit))
        cid = f"{self._prefix}-{pid}-o{n}"
        self._entries[cid] = (pid, position_id)
        self._unfilled[cid] = qty
        self._pending.setdefault((pid, position_id), set()).add(cid)
        return self._send(pid, f"o{n}", position_id, Side.BUY, qty, limit, ts_ns)

    def _limit(self, price: Decimal, side: Side) -> Decimal:
        """Entries bid up to 0.2 % below the price; exits ask within 0.1 % of it."""
        if side is Side.BUY:
            factor = 1 - Decimal(self._rng.randint(0, 20)) / 10_000
            return max(self._tick, (price * factor).quantize(self._tick, rounding=ROUND_FLOOR))
        factor = 1 + Decimal(self._rng.randint(-10, 10)) / 10_000
        return max(self._tick, (price * factor).quantize(self._tick, rounding=ROUND_CEILING))

    def _send(  # noqa: PLR0917 - private, one call per kind of signal
        self,
        pid: str,
        signal_id: str,
        position_id: str,
        side: Side,
        qty: int | None,
        limit: Decimal,
        ts_ns: int,
    ) -> OpenPosition | ClosePosition:
        self.sent[f"{self._prefix}-{pid}-{signal_id}"] = SentOrder(
            profile_id=pid,
            signal_id=signal_id,
            position_id=position_id,
            side=side,
            qty=qty,
            limit_price=limit,
        )
        common: dict[str, Any] = {
            "message_id": f"sig-{pid}-{signal_id}",
            "ts_ns": ts_ns,
            "profile_id": pid,
            "signal_id": signal_id,
            "symbol": self._market.symbol,
            "position_id": position_id,
            "limit_price": limit,
        }
        if side is Side.SELL:
            return ClosePosition(**common)  # sells what the position holds
        assert qty is not None  # an entry always names its quantity
        return OpenPosition(qty=qty, **common)
