"""Inside the exchange server process: the exchange, its price drivers, the per-consumer fill
feed, and the loopback listener (one thread per connection).

Live feed: every trade the exchange delivers (re-deliveries included) is appended, in
delivery order, to one *delivery log* kept for the life of the process. Each named consumer
has a cursor into it. ``drain_fills(consumer, ack)`` first moves the cursor to ``ack`` (the
mark returned by that consumer's previous drain, i.e. "I have that batch") and then returns
everything after the cursor, with a new mark. A consumer that dies between a drain and its
next one therefore gets that batch again: at-least-once, duplicates possible; consumers dedupe
on the trade id, and ``fetch_my_trades`` stays the authoritative, duplicate-free record. A
consumer name never seen before starts at the beginning of the log. Marks carry the process's
random ``epoch``, so a mark from an earlier server process is ignored, never misapplied.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from multiprocessing import AuthenticationError
from multiprocessing.connection import Connection
from typing import Any

from exchange._wire import DriverStatus, Reply, ServerStatus, Wire, accept, configure, encode_error
from exchange.base import Trade
from exchange.hosted import PriceDriver, ServerConfig
from messages import InvalidMessage, check_id

#: Exchange methods a client may call, by name (``SimulatedExchange``'s own).
EXCHANGE_METHODS = (
    "advance",
    "cancel_order",
    "check_invariants",
    "create_order",
    "fees_collected",
    "fetch_balance",
    "fetch_my_trades",
    "fetch_open_orders",
    "fetch_order",
    "house_balance",
    "load_markets",
    "on_price",
    "price",
    "set_available",
    "supply",
    "to_state",
)

Mark = tuple[str, int]  # (server epoch, delivery log position)


class Service:
    """What the server's connections call: the exchange, the drivers and the fill feed."""

    def __init__(self, config: ServerConfig) -> None:
        self.exchange = exchange = config.build()
        self.epoch = secrets.token_hex(8)
        self._lock = threading.Lock()  # the log, cursors and counters; taken after exchange's
        self._log: list[Trade] = []
        self._cursors: dict[str, int] = {}
        self._clients = 0
        self._unattended_steps = 0
        self._unattended_trades = 0
        symbols = config.driver_symbols(exchange._book.markets)
        self.drivers = [
            _Driver(self, spec, s) for spec, s in zip(config.drivers, symbols, strict=True)
        ]
        self._methods: dict[str, Callable[..., Any]] = {
            name: getattr(exchange, name) for name in EXCHANGE_METHODS
        }
        self._methods |= {
            "drain_fills": self.drain_fills,
            "pause": self.pause,
            "resume": self.resume,
            "status": self.status,
        }

    def handle(self, request: bytes) -> Reply:
        """Run one pickled ``(method, args, kwargs)`` request; errors become error replies."""
        try:
            method, args, kwargs = pickle.loads(request)
            if method not in self._methods:
                raise InvalidMessage(f"unknown request {method!r}; known: {sorted(self._methods)}")
            return True, self._methods[method](*args, **kwargs)
        except Exception as exc:
            return False, encode_error(exc)

    @contextlib.contextmanager
    def client(self) -> Iterator[None]:
        """Count a connected client for as long as the block runs."""
        with self._lock:
            self._clients += 1
        try:
            yield
        finally:
            with self._lock:
                self._clients -= 1

    # --- the market -----------------------------------------------------------------------

    def step(self, symbol: str, price: Decimal) -> None:
        """One driver step; counts the steps and trades that happened with no client."""
        trades = self.exchange.on_price(symbol, price)
        with self._lock:
            if self._clients == 0:
                self._unattended_steps += 1
                self._unattended_trades += len(trades)

    def pause(self) -> None:
        """Pause every price driver (they keep their place in the path)."""
        for driver in self.drivers:
            driver.pause()

    def resume(self) -> None:
        """Resume every price driver."""
        for driver in self.drivers:
            driver.resume()

    def start(self) -> None:
        for driver in self.drivers:
            driver.start()

    def stop(self) -> None:
        for driver in self.drivers:
            driver.stop()

    # --- the live feed --------------------------------------------------------------------

    def drain_fills(self, consumer: str, ack: Mark | None = None) -> tuple[list[Trade], Mark]:
        """The deliveries after ``consumer``'s cursor (moved to ``ack`` first) and a new mark.

        ExchangeUnavailable during a simulated outage, like ``SimulatedExchange.drain_fills``.
        """
        check_id(consumer, name="consumer")
        with self._lock:
            self._log += self.exchange.drain_fills()
            cursor = self._cursors.get(consumer, 0)
            if ack is not None:
                epoch, position = ack
                if epoch == self.epoch:
                    if not 0 <= position <= len(self._log):
                        raise InvalidMessage(
                            f"ack position must be in [0, {len(self._log)}], got {position!r}"
                        )
                    cursor = max(cursor, position)
            self._cursors[consumer] = cursor
            end = len(self._log)
            return self._log[cursor:end], (self.epoch, end)

    def status(self) -> ServerStatus:
        """Plain data about the server process."""
        with self._lock:
            return {
                "pid": os.getpid(),
                "epoch": self.epoch,
                "clients": self._clients,
                "drivers": [driver.status() for driver in self.drivers],
                "unattended_steps": self._unattended_steps,
                "unattended_trades": self._unattended_trades,
                "deliveries": len(self._log),
                "consumers": dict(self._cursors),
            }


class _Driver:
    """A thread that walks one market through a :class:`PriceDriver`'s path."""

    def __init__(self, service: Service, spec: PriceDriver, symbol: str) -> None:
        self.spec = spec
        self.symbol = symbol
        self._service = service
        self._stopping = threading.Event()
        self._resumed = threading.Event()
        if not spec.paused:
            self._resumed.set()
        self._steps = 0
        self._finished = False
        self._error: str | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"price-driver {symbol}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def pause(self) -> None:
        self._resumed.clear()

    def resume(self) -> None:
        self._resumed.set()

    def stop(self) -> None:
        self._stopping.set()
        self._resumed.set()  # wake it if paused
        self._thread.join(timeout=5.0)

    def status(self) -> DriverStatus:
        return {
            "symbol": self.symbol,
            "steps": self._steps,
            "total": self.spec.steps,
            "paused": not self._resumed.is_set(),
            "finished": self._finished,
            "error": self._error,
        }

    def _run(self) -> None:
        spec = self.spec
        interval = 0.0 if spec.rate is None else float(1 / spec.rate)  # a duration, not money
        started = time.monotonic()
        deadline = math.inf if spec.max_seconds is None else started + float(spec.max_seconds)
        due = started
        try:
            while self._steps < spec.steps and not self._stopping.is_set():
                if not self._resumed.is_set():
                    self._resumed.wait()
                    due = time.monotonic()  # no burst to catch up on the pause
                    continue
                now = time.monotonic()
                if now >= deadline:
                    break
                if due > now:
                    self._stopping.wait(min(due, deadline) - now)
                    continue  # look at stop, pause and the deadline again
                self._service.step(self.symbol, spec.prices[self._steps])
                self._steps += 1
                due = max(due, now) + interval
        except Exception as exc:  # a bug in the exchange: report it in status()
            self._error = repr(exc)
        finally:
            self._finished = True


def serve_forever(
    listener: socket.socket, service: Service, authkey: bytes, stop: threading.Event
) -> None:
    """Accept connections until ``stop`` is set, each served by its own daemon thread."""
    while not stop.is_set():
        try:
            sock, _ = listener.accept()
        except OSError:
            if stop.is_set():
                return
            stop.wait(0.05)  # e.g. out of file descriptors: do not spin
            continue
        threading.Thread(
            target=_serve_connection, args=(sock, service, authkey), daemon=True
        ).start()


def _serve_connection(sock: socket.socket, service: Service, authkey: bytes) -> None:
    configure(sock)
    conn: Wire = Connection(sock.detach())
    with conn, contextlib.suppress(OSError, EOFError, AuthenticationError):
        accept(conn, authkey)
        with service.client():
            while True:
                reply = service.handle(conn.recv_bytes())
                try:
                    data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
                except Exception as exc:  # a result that cannot cross: say so, keep serving
                    data = pickle.dumps((False, encode_error(exc)))
                conn.send_bytes(data)
