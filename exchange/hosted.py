"""A :class:`SimulatedExchange` hosted in its own OS process, for crash drills.

    with ExchangeServer(markets, balances, seed=1, drivers=[driver]) as server:
        exchange = RemoteExchange(*server.endpoint)   # or server.client()
        ...   # kill -9 any client at any time: the exchange and its books stay

The server is ``python -m exchange.server`` (see :mod:`exchange.server`), started with
:mod:`subprocess` so it shares no interpreter state with its parent. It listens on 127.0.0.1
only, behind an authkey, and outlives every client; it stops with :meth:`ExchangeServer.stop`,
or by itself when its parent process ends (its stdin is a lifeline from the parent, and it
also watches the parent's pid).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import secrets
import select
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Self

from exchange._config import DEFAULT_PARTIAL_FILL, PartialFill
from exchange._wire import HOST, Endpoint
from exchange.prices import random_walk
from exchange.remote import RemoteExchange
from exchange.simulated import SimulatedExchange
from messages import ExchangeUnavailable, InvalidConfig, Market, check_price

#: Exit status of a server that could not bind its port (the parent then tries another).
EXIT_ADDRESS_IN_USE: Final = 3
_ZERO = Decimal(0)
_ROOT = Path(__file__).resolve().parent.parent  # the directory that holds ``exchange/``


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceDriver:
    """A price path the server walks through by itself, ``rate`` steps per second.

    The driver steps through ``prices`` once (at most ``max_steps`` of them), and stops for good
    ``max_seconds`` after it started (paused time included), whichever comes first. Clients
    can :meth:`RemoteExchange.pause` and :meth:`RemoteExchange.resume` it.

    Args:
        prices: the path, exact positive Decimals (e.g. :func:`exchange.random_walk`).
        symbol: the market it moves; ``None`` for the only market.
        rate: steps per second (a Decimal > 0); ``None`` steps as fast as it can.
        max_steps: at most this many steps (``None``: the whole path).
        max_seconds: the driver's lifetime (``None``: until the path ends).
        paused: start paused (until the first ``resume()``).
    """

    prices: Sequence[Decimal]
    symbol: str | None = None
    rate: Decimal | None = Decimal(100)
    max_steps: int | None = None
    max_seconds: Decimal | None = None
    paused: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "prices", tuple(self.prices))
        try:
            for price in self.prices:
                check_price(price)
        except ValueError as exc:
            raise InvalidConfig(f"price driver path: {exc}") from None
        for name in ("rate", "max_seconds"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, Decimal) or not value.is_finite() or value <= 0
            ):
                raise InvalidConfig(f"price driver {name} must be a Decimal > 0, got {value!r}")
        steps = self.max_steps
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)):
            raise InvalidConfig(f"price driver max_steps must be an int, got {steps!r}")
        if steps is not None and steps < 0:
            raise InvalidConfig(f"price driver max_steps must be >= 0, got {steps}")

    @classmethod
    def walk(
        cls,
        seed: int,
        start: Decimal,
        steps: int,
        vol: Decimal,
        *,
        tick: Decimal = Decimal("0.01"),
        symbol: str | None = None,
        rate: Decimal | None = Decimal(100),
        max_seconds: Decimal | None = None,
        paused: bool = False,
    ) -> PriceDriver:
        """A driver along ``random_walk(seed, start, steps, vol, tick=tick)``."""
        path = random_walk(seed, start, steps, vol, tick=tick)
        return cls(prices=path, symbol=symbol, rate=rate, max_seconds=max_seconds, paused=paused)

    @property
    def steps(self) -> int:
        """How many steps the driver takes if it is not stopped early."""
        total = len(self.prices)
        return total if self.max_steps is None else min(total, self.max_steps)


@dataclass(slots=True)
class StepClock:
    """A deterministic clock: each read returns ``step`` ns more than the previous one.

    Picklable, so a server can use it; two exchanges given equal clocks and the same calls
    stamp the same timestamps.
    """

    now: int = 1_000_000_000
    step: int = 1

    def __call__(self) -> int:
        self.now += self.step
        return self.now


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """Everything the server process needs; pickled to its stdin by :class:`ExchangeServer`."""

    markets: dict[str, Market] = field(default_factory=dict)
    balances: dict[str, int] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)  # SimulatedExchange keywords
    state: dict[str, Any] | None = None  # SimulatedExchange.to_state(); wins over the above
    clock: Callable[[], int] | None = None  # None: time.time_ns
    drivers: tuple[PriceDriver, ...] = ()
    port: int = 0
    authkey: bytes = b""

    def build(self) -> SimulatedExchange:
        """The exchange this configuration describes (raises on a bad configuration)."""
        clock = time.time_ns if self.clock is None else self.clock
        if self.state is not None:
            exchange = SimulatedExchange.from_state(self.state, clock=clock, sleep=time.sleep)
        else:
            exchange = SimulatedExchange(
                self.markets, self.balances, clock=clock, sleep=time.sleep, **self.settings
            )
        # Not load_markets(): it sleeps the latency and refuses while the state is unavailable.
        self.driver_symbols(exchange._book.markets)
        return exchange

    def driver_symbols(self, markets: Mapping[str, Market]) -> list[str]:
        """The market each driver moves; InvalidConfig for an unknown or ambiguous one."""
        symbols = []
        for driver in self.drivers:
            symbol = driver.symbol
            if symbol is None:
                if len(markets) != 1:
                    raise InvalidConfig(
                        f"a price driver needs a symbol: {len(markets)} markets are traded"
                    )
                (symbol,) = markets
            if symbol not in markets:
                raise InvalidConfig(f"price driver for unknown market {symbol!r}")
            if symbol in symbols:
                raise InvalidConfig(f"two price drivers for {symbol}")
            symbols.append(symbol)
        return symbols


class ExchangeServer:
    """One exchange server process that this object starts, stops and kills.

    Args:
        markets, balances, maker_fee, taker_fee, latency, reject_rate, duplicate_rate,
        partial_fill, seed: as for :class:`SimulatedExchange` (``latency`` really sleeps).
        clock: a picklable clock for the server's exchange (e.g. :class:`StepClock`);
            default: the server's ``time.time_ns``.
        drivers: price drivers run inside the server (at most one per market).
        port: the TCP port on 127.0.0.1; 0 picks a free one. A restart (:meth:`start` after
            :meth:`stop` or :meth:`kill`) listens on the same port again; if that port was
            picked (``port=0``) and is taken meanwhile, on another free one: the address
            may change, see :meth:`RemoteExchange.reconnect`.
        authkey: the key clients must know; default: 32 random bytes.
        startup_timeout_s: how long :meth:`start` waits for the server to listen.

    A restart starts a new exchange from the same configuration: what the killed one held
    is gone (simulate an exchange outage with ``set_available(False)`` instead). The
    configuration is checked here, in the caller's process.
    """

    def __init__(
        self,
        markets: Mapping[str, Market] | Iterable[Market],
        balances: Mapping[str, int],
        *,
        maker_fee: Decimal = _ZERO,
        taker_fee: Decimal = _ZERO,
        latency: Decimal = _ZERO,
        reject_rate: Decimal = _ZERO,
        duplicate_rate: Decimal = _ZERO,
        partial_fill: PartialFill | None = DEFAULT_PARTIAL_FILL,
        seed: int = 0,
        clock: Callable[[], int] | None = None,
        drivers: Iterable[PriceDriver] = (),
        port: int = 0,
        authkey: bytes | None = None,
        startup_timeout_s: float = 10.0,
    ) -> None:
        markets = markets if isinstance(markets, Mapping) else {m.symbol: m for m in markets}
        config = ServerConfig(
            markets=dict(markets),
            balances=dict(balances),
            settings={
                "maker_fee": maker_fee,
                "taker_fee": taker_fee,
                "latency": latency,
                "reject_rate": reject_rate,
                "duplicate_rate": duplicate_rate,
                "partial_fill": partial_fill,
                "seed": seed,
            },
            clock=clock,
            drivers=tuple(drivers),
        )
        self._setup(config, port, authkey, startup_timeout_s)

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, Any],
        *,
        clock: Callable[[], int] | None = None,
        drivers: Iterable[PriceDriver] = (),
        port: int = 0,
        authkey: bytes | None = None,
        startup_timeout_s: float = 10.0,
    ) -> ExchangeServer:
        """A server whose exchange starts as ``SimulatedExchange.from_state(state)``."""
        server = cls.__new__(cls)
        config = ServerConfig(state=dict(state), clock=clock, drivers=tuple(drivers))
        server._setup(config, port, authkey, startup_timeout_s)
        return server

    def _setup(
        self, config: ServerConfig, port: int, authkey: bytes | None, startup_timeout_s: float
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536:
            raise InvalidConfig(f"port must be an int in [0, 65536), got {port!r}")
        if authkey is None:
            authkey = secrets.token_bytes(32)
        if not isinstance(authkey, bytes) or not authkey:
            raise InvalidConfig("authkey must be non-empty bytes")
        config = replace(config, authkey=authkey)
        config.build()  # a bad configuration fails here, not in the child
        try:
            pickle.dumps(config)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise InvalidConfig(f"the server configuration is not picklable: {exc}") from exc
        self._config = config
        self._port = port
        self._auto_port = port == 0
        self._startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._endpoint: Endpoint | None = None

    # --- state ----------------------------------------------------------------------------

    @property
    def endpoint(self) -> Endpoint:
        """Address and authkey of the server's last start (InvalidConfig before one)."""
        if self._endpoint is None:
            raise InvalidConfig("the exchange server has not been started")
        return self._endpoint

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def client(self, **options: Any) -> RemoteExchange:
        """A new :class:`RemoteExchange` for this server (``options``: its keywords)."""
        return RemoteExchange(*self.endpoint, **options)

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> Endpoint:
        """Start the server (no-op if it runs) and return where it listens.

        Raises:
            ExchangeUnavailable: it exited or did not listen within ``startup_timeout_s``.
        """
        if self.running:
            return self.endpoint
        self._reap()
        try:
            return self._launch(self._port)
        except _AddressInUse:
            if not self._auto_port or self._port == 0:
                raise ExchangeUnavailable(f"port {self._port} on {HOST} is in use") from None
        try:
            return self._launch(0)  # the port we picked before is taken: any free one will do
        except _AddressInUse:
            raise ExchangeUnavailable(f"no free port on {HOST}") from None

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop gracefully (the server closes its port and exits), SIGKILL after ``timeout_s``."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _close(proc.stdin)  # the lifeline: the server exits when it reads EOF
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._reap()

    def kill(self) -> None:
        """SIGKILL the server, like a crash of the exchange's host."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        self._reap()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"{HOST}:{self._port}" if self._port else "(no port yet)"
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<ExchangeServer {where} {state}>"

    # --- helpers --------------------------------------------------------------------------

    def _launch(self, port: int) -> Endpoint:
        config = replace(self._config, port=port)
        payload = pickle.dumps(config)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH", "")) if p)
        command = [sys.executable, "-m", "exchange.server", "--config-stdin"]
        command += ["--parent-pid", str(os.getpid())]
        proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=_ROOT
        )
        self._proc = proc
        assert proc.stdin is not None
        assert proc.stdout is not None
        try:
            # The stdin pipe stays open after the configuration: it is the server's lifeline.
            proc.stdin.write(struct.pack(">Q", len(payload)) + payload)
            proc.stdin.flush()
        except BrokenPipeError:
            pass  # it died at once: reported below with its exit status
        line = _read_line(proc.stdout, self._startup_timeout_s)
        _close(proc.stdout)  # the server writes nothing more to it
        if not line:
            self.kill()
            status = proc.returncode
            if status == EXIT_ADDRESS_IN_USE:
                raise _AddressInUse
            raise ExchangeUnavailable(
                f"the exchange server exited with status {status} or did not listen within"
                f" {self._startup_timeout_s} s (its stderr says why)"
            )
        ready = json.loads(line)
        self._port = ready["port"]
        self._endpoint = Endpoint((HOST, ready["port"]), config.authkey)
        return self._endpoint

    def _reap(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            _close(proc.stdin)
            _close(proc.stdout)


class _AddressInUse(Exception):
    pass


def _read_line(stream: IO[bytes], timeout_s: float) -> bytes:
    """The first line the server prints, or b"" if it exits or times out first."""
    deadline = time.monotonic() + timeout_s
    while (remaining := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([stream], [], [], remaining)
        if ready:
            return stream.readline()  # the server prints the whole line at once
    return b""


def _close(stream: IO[bytes] | None) -> None:
    if stream is not None:
        with contextlib.suppress(OSError):
            stream.close()
