"""Builders shared by the actor-runtime tests: markets, profiles, signals, fills, a reference.

Nothing here sleeps to wait for an actor: tests wait with ``Runtime.drain()`` (which asks every
profile to sync and checkpoint), with futures, or with :func:`eventually`, a bounded poll for
facts that only the outside world (the exchange) can tell.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, cast

import pykka
import pytest

from accounting import PositionLedger, entry_estimate
from actors.events import EventSink
from actors.position_profile import PositionProfileConfig, position_factory
from actors.profile import HandlerFactory
from actors.runtime import Runtime
from actors.supervisor import ProfileSpec, RestartPolicy
from exchange import Order, OrderType, SimulatedExchange, trade_to_fill
from messages import (
    Asset,
    ClosePosition,
    Fill,
    InputError,
    Market,
    Message,
    OpenPosition,
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    Side,
    StateError,
    UnknownOrder,
)

USDT = Asset(symbol="USDT", precision=2)
BTC = Asset(symbol="BTC", precision=8)
ETH = Asset(symbol="ETH", precision=8)
BTC_USDT = Market(symbol="BTC/USDT", base=BTC, quote=USDT)
ETH_USDT = Market(symbol="ETH/USDT", base=ETH, quote=USDT)
MARKETS = {m.symbol: m for m in (BTC_USDT, ETH_USDT)}

D = Decimal
PRICE = D("30000")  # BTC entry limit; a step to BELOW fills resting buys at PRICE
QTY = 1_000_000  # 0.01 BTC
MAX_FEE_RATE = D("0.001")
#: What one default entry (QTY at PRICE) reserves: 300.00 USDT + 0.30 fee = 30030 units.
ESTIMATE = entry_estimate(BTC_USDT, QTY, PRICE, MAX_FEE_RATE)
#: The exchange account's USDT (minor units): room for every order any test places.
ACCOUNT_USDT = 100_000_000
#: Restart almost at once: tests never wait on a wall-clock backoff.
FAST_RESTARTS = RestartPolicy(backoff_base=0.001, backoff_max=0.005)


def eventually(predicate: Callable[[], bool], *, what: str, timeout: float = 20.0) -> None:
    """Poll ``predicate`` until true; fail (never hang) after ``timeout`` seconds.

    Only for facts that no future or drain can wait on (e.g. a thread we do not own reaching
    a point). The timeout is a safety net, never an assertion about speed.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.001)


class Recorder:
    """Every event the sink publishes, in publication order (the sink keeps only the last few)."""

    def __init__(self, sink: EventSink) -> None:
        self._lock = threading.Lock()
        self._events: list[Message] = []
        sink.subscribe(self._on_event)

    def _on_event(self, event: Message) -> None:
        with self._lock:
            self._events.append(event)

    def of(self, event_type: type[Message], **fields: object) -> list[Any]:
        """Events of ``event_type`` whose attributes equal ``fields``."""
        with self._lock:
            events = list(self._events)
        return [
            e
            for e in events
            if isinstance(e, event_type) and all(getattr(e, k) == v for k, v in fields.items())
        ]


def cid(profile_id: str, signal_id: str) -> str:
    """The deterministic client order id a position profile gives a signal."""
    return f"cf-{profile_id}-{signal_id}"


def position_spec(
    profile_id: str,
    *,
    exchange: SimulatedExchange,
    events: EventSink,
    allocated: int = 1_000_000,
    account_id: str = "main",
) -> ProfileSpec:
    """A position profile trading both markets; it claims exactly its allocation."""
    config = PositionProfileConfig(
        quote=USDT, allocated_capital=allocated, markets=MARKETS, max_fee_rate=MAX_FEE_RATE
    )
    return ProfileSpec(
        profile_id=profile_id,
        # position_factory's return type names no parameters; the protocol's do (same shape).
        factory=cast(HandlerFactory, position_factory(config, exchange=exchange, events=events)),
        symbols=frozenset(MARKETS),
        account_id=account_id,
        claims={USDT.symbol: allocated},
    )


class BlockingExchange(SimulatedExchange):
    """``create_order`` for one client order id blocks until the test releases it."""

    def __init__(self, blocked: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.blocked = blocked
        self.entered = threading.Event()
        self.release = threading.Event()

    def create_order(  # noqa: PLR0917 - ccxt's positional signature
        self,
        symbol: str,
        type: OrderType,
        side: Side | str,
        amount: int,
        price: Decimal | None = None,
        params: Mapping[str, object] | None = None,
    ) -> Order:
        if (params or {}).get("clientOrderId") == self.blocked:
            self.entered.set()
            assert self.release.wait(timeout=30), "the test never released the order"
        return super().create_order(symbol, type, side, amount, price, params)


def new_exchange(**overrides: Any) -> SimulatedExchange:
    """Both markets, a well-funded account, no fees, the default random partial fills."""
    kwargs: dict[str, Any] = {
        "markets": MARKETS,
        "balances": {"USDT": ACCOUNT_USDT, "BTC": 0, "ETH": 0},
        "seed": 7,
    }
    kwargs.update(overrides)
    return SimulatedExchange(**kwargs)


#: ``Runtime(dispatch_threads=...)`` for :func:`running`; the ``dispatch_mode`` fixture sets it.
DISPATCH = {"threads": 4}


@pytest.fixture(params=[4, 1, 0], ids=["pool4", "pool1", "thread-per-profile"])
def dispatch_mode(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run a module's runtime tests on a 4-thread dispatcher, a single dispatcher thread (every
    profile shares one), and one thread per profile (``pykka.ThreadingActor`` semantics)."""
    DISPATCH["threads"] = request.param
    try:
        yield request.param
    finally:
        DISPATCH["threads"] = 4


@contextlib.contextmanager
def running(
    specs: Sequence[ProfileSpec], *, events: EventSink, policy: RestartPolicy = FAST_RESTARTS
) -> Iterator[Runtime]:
    """A started runtime (account balances checked), stopped on exit whatever happens."""
    runtime = Runtime(
        specs,
        events=events,
        policy=policy,
        balances={"main": {"USDT": 10**12}},
        dispatch_threads=DISPATCH["threads"],
    )
    runtime.start()
    try:
        yield runtime
    finally:
        runtime.stop()


def open_signal(
    profile_id: str,
    signal_id: str,
    *,
    qty: int = QTY,
    price: Decimal = PRICE,
    symbol: str = "BTC/USDT",
    position_id: str | None = None,
) -> OpenPosition:
    return OpenPosition(
        message_id=f"m-{profile_id}-{signal_id}",
        ts_ns=1,
        profile_id=profile_id,
        signal_id=signal_id,
        symbol=symbol,
        position_id=position_id if position_id is not None else f"pos-{signal_id}",
        qty=qty,
        limit_price=price,
    )


def close_signal(
    profile_id: str,
    signal_id: str,
    *,
    position_id: str,
    price: Decimal,
    symbol: str = "BTC/USDT",
) -> ClosePosition:
    return ClosePosition(
        message_id=f"m-{profile_id}-{signal_id}",
        ts_ns=1,
        profile_id=profile_id,
        signal_id=signal_id,
        symbol=symbol,
        position_id=position_id,
        limit_price=price,
    )


def step(exchange: SimulatedExchange, price: Decimal, symbol: str = "BTC/USDT") -> list[Fill]:
    """One price step; the fills the feed delivered, as the runtime receives them."""
    exchange.on_price(symbol, price)
    return [trade_to_fill(t) for t in exchange.drain_fills()]


def order_exists(exchange: SimulatedExchange, client_order_id: str) -> bool:
    try:
        exchange.fetch_order(client_order_id)
    except UnknownOrder:
        return False
    return True


def fill_until_closed(
    exchange: SimulatedExchange,
    runtime: Runtime,
    client_order_ids: Sequence[str],
    *,
    price: Decimal,
    symbol: str = "BTC/USDT",
) -> list[Fill]:
    """Step the price until the exchange reports every order closed; submit every fill."""
    eventually(
        lambda: all(order_exists(exchange, c) for c in client_order_ids),
        what=f"orders {client_order_ids} on the exchange",
    )
    fills: list[Fill] = []
    for _ in range(50):  # each step fills >= 10 % of an order: 10 steps always suffice
        if all(exchange.fetch_order(c)["status"] == "closed" for c in client_order_ids):
            return fills
        batch = step(exchange, price, symbol)
        runtime.submit(*batch)
        fills += batch
    raise AssertionError(f"orders {client_order_ids} still open after 50 price steps")


def stored_state(runtime: Runtime, profile_id: str) -> dict[str, Any]:
    """The profile's last checkpointed books (after ``drain()``: everything applied)."""
    checkpoint = runtime.store.load(profile_id)
    assert checkpoint is not None, f"profile {profile_id} never checkpointed"
    return checkpoint.state


def ledger_of(runtime: Runtime, profile_id: str) -> PositionLedger:
    """The profile's checkpointed books as a ledger; ``from_state`` checks every invariant."""
    return PositionLedger.from_state(stored_state(runtime, profile_id))


def reference_apply(ledger: PositionLedger, payload: object) -> None:
    """What a position profile does to its books, without actors, exchange or events.

    The simple model the runtime is compared with: one ledger, one message at a time, each
    exactly once; a refused message changes nothing (the exchange accepts every order here).
    """
    with contextlib.suppress(InputError, StateError):
        match payload:
            case Fill():
                ledger.apply_fill(payload)
            case OpenPosition():
                ledger.reserve_for_order(
                    client_order_id=cid(ledger.profile_id, payload.signal_id),
                    symbol=payload.symbol,
                    side=Side.BUY,
                    position_id=payload.position_id,
                    qty=payload.qty,
                    limit_price=payload.limit_price,
                    estimate=payload.estimate,
                )
            case ClosePosition():
                qty = payload.qty
                if qty is None:
                    qty = ledger.sellable_qty(payload.position_id)
                ledger.reserve_for_order(
                    client_order_id=cid(ledger.profile_id, payload.signal_id),
                    symbol=payload.symbol,
                    side=Side.SELL,
                    position_id=payload.position_id,
                    qty=qty,
                    limit_price=payload.limit_price,
                )
            case OrderCanceled(client_order_id=order_id) | OrderRejected(client_order_id=order_id):
                if order_id in ledger.orders:
                    ledger.cancel_order(order_id)
            case OrderAccepted():
                pass
            case _:
                raise AssertionError(f"the reference does not model {payload!r}")


def start_threads(count: int, target: Callable[[int], None]) -> list[BaseException]:
    """Run ``target(i)`` on ``count`` threads released together by a barrier; join them.

    Returns the exceptions the threads raised (a test asserts there are none).
    """
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), name=f"test-{i}") for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive(), f"{t.name} did not finish"
    return errors


@pytest.fixture(autouse=True)
def _no_leaked_actors() -> Iterator[None]:
    """Each test starts with no actor running and stops whatever it leaves behind.

    (A stopped runtime stops its profiles without waiting for them: they may linger briefly.)
    """
    pykka.ActorRegistry.stop_all(block=True, timeout=10)
    yield
    pykka.ActorRegistry.stop_all(block=True, timeout=10)


@pytest.fixture
def events() -> EventSink:
    return EventSink(keep=10)


@pytest.fixture
def recorder(events: EventSink) -> Recorder:
    return Recorder(events)


@pytest.fixture
def exchange() -> SimulatedExchange:
    return new_exchange()
