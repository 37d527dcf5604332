"""``capflow loadtest``: its profiles, the messages it sends, and the exact model it checks.

How the load is made (synthesized fills, not a moving market): every position profile first
places ``RESTING_ORDERS`` large limit buys through the real path (an ``OpenPosition`` signal,
the profile's reservation, ``SimulatedExchange.create_order``, the ownership index). The load
is then exact :class:`messages.Fill` messages for those known orders, built here directly —
one lot at the order's limit price, an exact number of cents, a 0.1 % fee rounded down — and
never produced by the exchange (whose price never moves, so it fills nothing itself). That
is much cheaper per fill than matching on ``SimulatedExchange`` and lets the caller set the
rate exactly. A share of the messages are signals: small entries (every ``WHALE_EVERY``-th one
far beyond the profile's capital, so it must be refused) and one-lot exits of open positions;
an accepted signal's order is filled, whole, by a later fill once its ``OrderAccepted`` is seen
(a fill sent earlier could reach the supervisor before the order's owner is known).

:class:`ProfileModel` is an independent, exact model of one profile's books — written from
the accounting rules in ``docs/accounting.md``, not from the ledger's code — updated in the
order the messages are sent, which is the order each profile applies them. It predicts every
reservation decision and the final books; the load test compares both.
"""

from __future__ import annotations

import collections
import itertools
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

from actors.events import EventSink
from actors.position_profile import PositionProfileConfig, position_factory
from actors.profile import HandlerFactory
from actors.supervisor import ProfileSpec
from capflow.run_setup import BASE, MARKET, QUOTE
from exchange import SimulatedExchange
from messages import (
    ClosePosition,
    Fill,
    Liquidity,
    Message,
    OpenPosition,
    OrderAccepted,
    Side,
    pro_rata,
)

#: Entry limit price of every order (and the price of its fills).
PRICE = Decimal("30000")
#: Exit limit price.
EXIT_PRICE = Decimal("30100")
#: One lot: 0.001 BTC, worth exactly 30.00 USDT at PRICE and 30.10 at EXIT_PRICE.
LOT = 100_000
#: Each resting order: 1,000 BTC = a million lots, more than any run fills.
RESTING_QTY = 1_000 * 10**8
#: Resting orders per profile (one position each: r0..r3).
RESTING_ORDERS = 4
#: Entry signals a profile's capital covers beyond its resting orders.
SIGNAL_HEADROOM = 1_000
#: Every this many entry signals one asks for more than the profile's capital.
WHALE_EVERY = 10
#: The profiles' client order id prefix.
ORDER_PREFIX = "lt"
ACCOUNT = "main"


#: Quote minor units per whole base unit (1 BTC) at our two prices.
_CENTS_PER_BTC = {PRICE: int(PRICE * 100), EXIT_PRICE: int(EXIT_PRICE * 100)}


def notional(qty: int, price: Decimal) -> int:
    """Quote units of ``qty`` at ``price``: exact for whole lots, so no rounding is involved.

    Integer arithmetic, not ``Market.notional`` (Fractions, ~5 us a call): the generator runs
    on the same GIL as the runtime it measures.
    """
    cost, rest = divmod(qty * _CENTS_PER_BTC[price], 10**BASE.precision)
    if rest:
        raise ValueError(f"{qty} at {price} is not a whole number of cents")
    return int(cost)


def fee_of(cost: int) -> int:
    """The exchange's 0.1 % maker fee, rounded down."""
    return cost // 1000


def estimate_of(qty: int, price: Decimal) -> int:
    """An entry's reservation: it covers cost + fee of any split of the order into fills."""
    cost = notional(qty, price)
    return cost + cost // 1000 + 1


#: Quote units allocated to every profile.
ALLOCATED = RESTING_ORDERS * estimate_of(RESTING_QTY, PRICE) + SIGNAL_HEADROOM * estimate_of(
    LOT, PRICE
)
#: An entry no profile can afford.
WHALE_QTY = 2 * RESTING_ORDERS * RESTING_QTY


@dataclass(slots=True)
class ModelOrder:
    """A pending order as the model sees it."""

    cid: str
    side: Side
    position_id: str
    qty: int
    price: Decimal
    reserved: int
    filled: int = 0
    exchange_id: str | None = None

    @property
    def remaining(self) -> int:
        return self.qty - self.filled


@dataclass(slots=True)
class ModelPosition:
    qty: int
    cost: int


@dataclass(slots=True)
class ProfileModel:
    """The books one profile must end with, from what was sent to it (one writer: the driver).

    ``seq`` counts the messages sent to the profile, which is the supervisor's per-profile
    sequence number of the last of them.
    """

    profile_id: str
    allocated: int = ALLOCATED
    reserved_for_orders: int = 0
    reserved_for_positions: int = 0
    realized_pnl: int = 0
    fees_paid: int = 0
    orders: dict[str, ModelOrder] = field(default_factory=dict)
    positions: dict[str, ModelPosition] = field(default_factory=dict)
    ready: collections.deque[str] = field(default_factory=collections.deque)
    seq: int = 0
    fills: int = 0

    @property
    def available(self) -> int:
        return (
            self.allocated
            - self.reserved_for_orders
            - self.reserved_for_positions
            + self.realized_pnl
        )

    def open(self, cid: str, position_id: str, qty: int, estimate: int) -> bool:
        """An entry signal: reserved and recorded if ``estimate`` fits ``available``."""
        self.seq += 1
        if estimate > self.available:
            return False
        self.orders[cid] = ModelOrder(
            cid=cid, side=Side.BUY, position_id=position_id, qty=qty, price=PRICE, reserved=estimate
        )
        self.reserved_for_orders += estimate
        return True

    def close(self, cid: str, position_id: str, qty: int) -> bool:
        """An exit signal: recorded if the position's unpromised quantity covers ``qty``."""
        self.seq += 1
        position = self.positions.get(position_id)
        promised = sum(
            o.remaining
            for o in self.orders.values()
            if o.side is Side.SELL and o.position_id == position_id
        )
        if position is None or qty > position.qty - promised:
            return False
        self.orders[cid] = ModelOrder(
            cid=cid, side=Side.SELL, position_id=position_id, qty=qty, price=EXIT_PRICE, reserved=0
        )
        return True

    def fill(self, order: ModelOrder, qty: int) -> tuple[int, int]:
        """Book a fill of ``qty`` of ``order``; returns its (cost, fee)."""
        self.seq += 1
        self.fills += 1
        cost = notional(qty, order.price)
        fee = fee_of(cost)
        self.fees_paid += fee
        order.filled += qty
        held = self.positions.get(order.position_id)
        if order.side is Side.BUY:
            consumed = cost + fee  # the estimate covers it: never more than the reservation
            order.reserved -= consumed
            self.reserved_for_orders -= consumed
            self.reserved_for_positions += consumed
            if held is None:
                self.positions[order.position_id] = ModelPosition(qty=qty, cost=consumed)
            else:
                held.qty += qty
                held.cost += consumed
            if order.remaining == 0:
                self.reserved_for_orders -= order.reserved  # the leftover is released
        else:
            assert held is not None, "an accepted exit always has its position"
            released = pro_rata(held.cost, qty, held.qty)
            self.reserved_for_positions -= released
            self.realized_pnl += cost - fee - released
            held.qty -= qty
            held.cost -= released
            if held.qty == 0:
                del self.positions[order.position_id]
        if order.remaining == 0:
            del self.orders[order.cid]
        return cost, fee

    def summary(self) -> dict[str, Any]:
        """What ``Runtime.books()`` must report for this profile."""
        return {
            "reserved_for_orders": self.reserved_for_orders,
            "reserved_for_positions": self.reserved_for_positions,
            "realized_pnl": self.realized_pnl,
            "fees_paid": self.fees_paid,
            "available": self.available,
            "halted": False,
            "pending_orders": len(self.orders),
            "open_positions": len(self.positions),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class SentSignal:
    """A signal sent, with the model's prediction of its reservation decision."""

    profile_id: str
    cid: str
    accepted: bool
    resting: bool = False


@dataclass(slots=True)
class Batch:
    """Messages to submit together; per fill (in order) its profile's index and its seq."""

    messages: list[Message] = field(default_factory=list)
    fill_profiles: list[int] = field(default_factory=list)
    fill_seqs: list[int] = field(default_factory=list)
    signal_ids: list[str] = field(default_factory=list)


class Workload:
    """Makes the load test's messages and keeps the model of every profile up to date.

    ``batch`` runs on the driver's thread only; ``on_event`` (an event-sink listener) runs on
    profile threads and only appends to a deque.

    Args:
        profile_ids: the profiles, in the order they are served round robin.
        signal_share: the share of messages that are signals, in [0, 1).
    """

    def __init__(self, profile_ids: Iterable[str], *, signal_share: float) -> None:
        self.models = {pid: ProfileModel(pid) for pid in profile_ids}
        self._ring = list(self.models.values())
        self._share = signal_share
        self._acc = 0.0
        self._turn = 0
        self._signal_turn = 0
        self._fill_ids = itertools.count()
        self._signal_ids = itertools.count()
        self._entries = 0
        self._closes = 0
        self.signals: dict[str, SentSignal] = {}  # by message id
        self._accepted: collections.deque[tuple[str, str, str]] = collections.deque()
        self._lock = threading.Lock()
        self.fills_sent = 0
        self.exhausted = 0  # fills not made: the profile had no order left to fill

    # -- events ----------------------------------------------------------------------------
    def on_event(self, event: Message) -> None:
        """Listener: an accepted order of ours becomes fillable."""
        if isinstance(event, OrderAccepted) and event.correlation_id is not None:
            self._accepted.append(
                (event.correlation_id, event.client_order_id, event.exchange_order_id)
            )

    def _take_accepted(self) -> None:
        while self._accepted:
            message_id, cid, exchange_id = self._accepted.popleft()
            signal = self.signals.get(message_id)
            if signal is None:
                continue
            model = self.models[signal.profile_id]
            order = model.orders.get(cid)
            if order is not None and order.exchange_id is None:
                order.exchange_id = exchange_id
                if not signal.resting:
                    model.ready.append(cid)

    # -- messages --------------------------------------------------------------------------
    def resting_orders(self, ts_ns: int) -> list[OpenPosition]:
        """The resting orders: ``RESTING_ORDERS`` large entries per profile (sent first)."""
        out = []
        for model in self._ring:
            for k in range(RESTING_ORDERS):
                out.append(self._open(model, ts_ns, f"r{k}", f"r{k}", RESTING_QTY, resting=True))
        return out

    def batch(self, n: int, ts_ns: int) -> Batch:
        """The next ``n`` messages (fewer if some profile had nothing left to fill)."""
        self._take_accepted()
        batch = Batch()
        ring, size = self._ring, len(self._ring)
        for _ in range(n):
            self._acc += self._share
            if self._acc >= 1.0:
                # Signals take turns over the profiles on a ring of their own, so that every
                # profile gets its share whatever the ratio of signals to profiles.
                self._acc -= 1.0
                signal = self._signal(ring[self._signal_turn], ts_ns)
                self._signal_turn = (self._signal_turn + 1) % size
                batch.messages.append(signal)
                batch.signal_ids.append(signal.message_id)
                continue
            index = self._turn
            model = ring[index]
            self._turn = (index + 1) % size
            fill = self._fill(model, ts_ns)
            if fill is None:
                self.exhausted += 1
                continue
            batch.messages.append(fill)
            batch.fill_profiles.append(index)
            batch.fill_seqs.append(model.seq)
        return batch

    def _signal(self, model: ProfileModel, ts_ns: int) -> OpenPosition | ClosePosition:
        n = next(self._signal_ids)
        if n % 2 == 0:
            self._entries += 1
            qty = WHALE_QTY if self._entries % WHALE_EVERY == 0 else LOT
            return self._open(model, ts_ns, f"s{n}", f"r{n // 2 % RESTING_ORDERS}", qty)
        self._closes += 1
        position_id = f"r{n // 2 % RESTING_ORDERS}"
        signal_id = f"s{n}"
        cid = f"{ORDER_PREFIX}-{model.profile_id}-{signal_id}"
        message = ClosePosition(
            message_id=f"sig-{model.profile_id}-{signal_id}",
            ts_ns=ts_ns,
            profile_id=model.profile_id,
            signal_id=signal_id,
            symbol=MARKET.symbol,
            position_id=position_id,
            qty=LOT,
            limit_price=EXIT_PRICE,
        )
        accepted = model.close(cid, position_id, LOT)
        self.signals[message.message_id] = SentSignal(
            profile_id=model.profile_id, cid=cid, accepted=accepted
        )
        return message

    def _open(
        self,
        model: ProfileModel,
        ts_ns: int,
        signal_id: str,
        position_id: str,
        qty: int,
        *,
        resting: bool = False,
    ) -> OpenPosition:
        cid = f"{ORDER_PREFIX}-{model.profile_id}-{signal_id}"
        estimate = estimate_of(qty, PRICE)
        message = OpenPosition(
            message_id=f"sig-{model.profile_id}-{signal_id}",
            ts_ns=ts_ns,
            profile_id=model.profile_id,
            signal_id=signal_id,
            symbol=MARKET.symbol,
            position_id=position_id,
            qty=qty,
            limit_price=PRICE,
            estimate=estimate,
        )
        accepted = model.open(cid, position_id, qty, estimate)
        self.signals[message.message_id] = SentSignal(
            profile_id=model.profile_id, cid=cid, accepted=accepted, resting=resting
        )
        return message

    def _fill(self, model: ProfileModel, ts_ns: int) -> Fill | None:
        order: ModelOrder | None = None
        while model.ready and order is None:
            order = model.orders.get(model.ready.popleft())
        qty = order.remaining if order is not None else 0
        if order is None:
            qty = LOT * (1 + model.fills % 3)
            for k in range(RESTING_ORDERS):
                candidate = model.orders.get(
                    f"{ORDER_PREFIX}-{model.profile_id}-r{(model.fills + k) % RESTING_ORDERS}"
                )
                if candidate is not None and candidate.exchange_id and candidate.remaining >= qty:
                    order = candidate
                    break
            if order is None:
                return None
        exchange_id = cast(str, order.exchange_id)
        cost, fee = model.fill(order, qty)
        n = next(self._fill_ids)
        self.fills_sent += 1
        return Fill(
            message_id=f"f{n}",
            ts_ns=ts_ns,
            trade_id=f"t{n}",
            order_id=exchange_id,
            client_order_id=order.cid,
            symbol=MARKET.symbol,
            side=order.side,
            qty=qty,
            price=order.price,
            cost=cost,
            fee=fee,
            fee_asset=QUOTE.symbol,
            liquidity=Liquidity.MAKER,
        )


def build_specs(
    profile_ids: list[str], events: EventSink
) -> tuple[list[ProfileSpec], SimulatedExchange, dict[str, dict[str, int]]]:
    """Position profiles on one simulated account, the exchange, and the runtime's balances.

    The account holds exactly the profiles' quote claims, and enough base for every exit a
    run can send (exits lock base on the exchange, which never sees our synthesized fills).
    """
    config = PositionProfileConfig(
        quote=QUOTE,
        allocated_capital=ALLOCATED,
        markets={MARKET.symbol: MARKET},
        max_fee_rate=Decimal("0.001"),
        order_prefix=ORDER_PREFIX,
    )
    quote_total = ALLOCATED * len(profile_ids)
    exchange = SimulatedExchange(
        [MARKET],
        {QUOTE.symbol: quote_total, BASE.symbol: RESTING_QTY * max(1, len(profile_ids))},
        maker_fee=Decimal("0.001"),
        taker_fee=Decimal("0.001"),
    )
    # cast: the factory is a plain Callable, which mypy does not take for the protocol.
    factory = cast(HandlerFactory, position_factory(config, exchange=exchange, events=events))
    specs = [
        ProfileSpec(
            profile_id=pid,
            factory=factory,
            symbols=frozenset({MARKET.symbol}),
            account_id=ACCOUNT,
            claims={QUOTE.symbol: ALLOCATED},
        )
        for pid in profile_ids
    ]
    return specs, exchange, {ACCOUNT: {QUOTE.symbol: quote_total}}


def profile_ids(count: int) -> list[str]:
    """``lt00000``, ``lt00001``, ...: sortable ids."""
    return [f"lt{i:05d}" for i in range(count)]
