"""A client of an exchange server: :class:`RemoteExchange`.

Connection loss is :class:`messages.ExchangeUnavailable`, never a hang and never a silent
retry: a request whose reply did not arrive may or may not have run on the server (re-send
``create_order`` with the same ``clientOrderId``: it is idempotent). The next call connects
again, so a client survives its server's restart without being rebuilt; if the restarted
server listens elsewhere, point the client at it with :meth:`RemoteExchange.reconnect`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from decimal import Decimal
from multiprocessing import AuthenticationError
from types import TracebackType
from typing import Any, Self, cast

from exchange._wire import HOST, Endpoint, ServerStatus, Wire, connect, decode_error
from exchange.base import Balance, Order, OrderType, Trade
from messages import ExchangeUnavailable, InvalidConfig, Market, Side, check_id

Mark = tuple[str, int]


class RemoteExchange:
    """The :class:`Exchange` and :class:`FillFeed` of an exchange server, over loopback.

    Implements both protocols (``subscribe`` excepted: poll :meth:`drain_fills`) plus the
    simulated exchange's controls (:meth:`advance`, :meth:`set_available`, ...) and the
    server's (:meth:`pause`, :meth:`resume`, :meth:`status`). Values cross exactly (ints stay
    ints, Decimals stay Decimals); an error raised in the server is raised here as the same
    capflow error type with the same message.

    Thread-safe: concurrent calls each take a connection from a small pool (opened on
    demand, at most ``max_connections``; ``max_connections=1`` serializes every call on one
    connection). A connection that fails is dropped; the next call opens a new one.

    Args:
        address: the server's ``(host, port)``; the host must be 127.0.0.1.
        authkey: the server's key.
        consumer: the live-feed consumer name :meth:`drain_fills` uses by default.
        timeout_s: how long to wait to connect, and for each reply.
        max_connections: the pool's size.
    """

    def __init__(
        self,
        address: tuple[str, int],
        authkey: bytes,
        *,
        consumer: str = "default",
        timeout_s: float = 10.0,
        max_connections: int = 8,
    ) -> None:
        host, port = address
        if host != HOST:
            raise InvalidConfig(f"an exchange server listens on {HOST} only, got {host!r}")
        if max_connections < 1:
            raise InvalidConfig(f"max_connections must be >= 1, got {max_connections}")
        self._endpoint = Endpoint((host, port), authkey)
        self._consumer = check_id(consumer, name="consumer")
        self._timeout_s = timeout_s
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()  # the pool, the marks and the drain locks
        self._idle: list[Wire] = []
        self._closed = False
        self._marks: dict[str, Mark] = {}
        self._drain_locks: dict[str, threading.Lock] = {}

    @property
    def endpoint(self) -> Endpoint:
        """The server this client talks to."""
        return self._endpoint

    # --- Exchange -------------------------------------------------------------------------

    def load_markets(self) -> dict[str, Market]:
        """The markets this exchange trades, by symbol."""
        return cast(dict[str, Market], self._call("load_markets"))

    def create_order(  # noqa: PLR0917 - ccxt's positional signature
        self,
        symbol: str,
        type: OrderType,
        side: Side | str,
        amount: int,
        price: Decimal | None = None,
        params: Mapping[str, object] | None = None,
    ) -> Order:
        """Place an order; idempotent on ``params["clientOrderId"]``."""
        params = None if params is None else dict(params)
        return cast(Order, self._call("create_order", symbol, type, side, amount, price, params))

    def cancel_order(self, id: str, symbol: str | None = None) -> Order:
        """Cancel an open order by exchange id or ``clientOrderId``; returns its final state."""
        return cast(Order, self._call("cancel_order", id, symbol))

    def fetch_order(self, id: str, symbol: str | None = None) -> Order:
        """One order, by exchange id or by ``clientOrderId``."""
        return cast(Order, self._call("fetch_order", id, symbol))

    def fetch_open_orders(self, symbol: str | None = None) -> list[Order]:
        """Orders still open, oldest first."""
        return cast(list[Order], self._call("fetch_open_orders", symbol))

    def fetch_my_trades(
        self, symbol: str | None = None, since: int | None = None, limit: int | None = None
    ) -> list[Trade]:
        """The account's trades, oldest first: the authoritative record."""
        return cast(list[Trade], self._call("fetch_my_trades", symbol, since, limit))

    def fetch_balance(self) -> Balance:
        """The account's free, used and total balances."""
        return cast(Balance, self._call("fetch_balance"))

    # --- FillFeed -------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[Trade], None]) -> Callable[[], None]:
        """Not supported: the server pushes nothing. Poll :meth:`drain_fills` instead."""
        raise NotImplementedError(
            "RemoteExchange has no push feed: poll drain_fills(consumer=...) instead"
        )

    def drain_fills(self, consumer: str | None = None) -> list[Trade]:
        """The trades delivered to ``consumer`` (default: this client's) since its last drain.

        The cursor lives in the server, per consumer name, so it survives this client. A
        batch counts as received only when the same consumer drains again through this
        client: if this process dies first, the next drain of that name (from any client)
        returns the batch again. At-least-once, and re-deliveries of the simulated exchange
        (``duplicate_rate``) come through too: dedupe on the trade ``id``. A name never used
        before starts with every trade delivered since the server started. Use one thread
        per consumer name (concurrent drains of one name are serialized here).
        """
        name = self._consumer if consumer is None else check_id(consumer, name="consumer")
        with self._lock:
            lock = self._drain_locks.setdefault(name, threading.Lock())
        with lock:
            trades, mark = self._call("drain_fills", name, self._marks.get(name))
            self._marks[name] = mark
        return cast(list[Trade], trades)

    # --- the simulated exchange and the server --------------------------------------------

    def advance(self, price: Decimal, symbol: str | None = None) -> list[Trade]:
        """One price step (``SimulatedExchange.advance``); returns the new trades."""
        return cast(list[Trade], self._call("advance", price, symbol))

    def price(self, symbol: str) -> Decimal | None:
        """The last price of ``symbol``, or ``None`` before its first price step."""
        return cast(Decimal | None, self._call("price", symbol))

    def set_available(self, available: bool) -> None:
        """Simulate an exchange outage (``False``) or its end; the server stays reachable."""
        self._call("set_available", available)

    def check_invariants(self) -> None:
        """Raise FundInvariantViolation unless the server's books hold exactly."""
        self._call("check_invariants")

    def to_state(self) -> dict[str, Any]:
        """The server's exchange as plain data (``SimulatedExchange.to_state``): the oracle."""
        return cast(dict[str, Any], self._call("to_state"))

    def supply(self) -> dict[str, int]:
        """Per asset, the constant ``free + used + house``."""
        return cast(dict[str, int], self._call("supply"))

    def house_balance(self) -> dict[str, int]:
        """The house account per asset (the counterparty of every trade)."""
        return cast(dict[str, int], self._call("house_balance"))

    def fees_collected(self) -> dict[str, int]:
        """Fees charged so far per asset."""
        return cast(dict[str, int], self._call("fees_collected"))

    def pause(self) -> None:
        """Pause the server's price drivers."""
        self._call("pause")

    def resume(self) -> None:
        """Resume the server's price drivers."""
        self._call("resume")

    def status(self) -> ServerStatus:
        """The server's pid, drivers, connected clients and live-feed cursors."""
        return cast(ServerStatus, self._call("status"))

    # --- connections ----------------------------------------------------------------------

    def reconnect(
        self, address: tuple[str, int] | None = None, authkey: bytes | None = None
    ) -> None:
        """Drop every idle connection; with arguments, talk to another server from now on.

        Feed marks of an earlier server are harmless (the server ignores them).
        """
        with self._lock:
            idle, self._idle = self._idle, []
            if address is not None:
                if address[0] != HOST:
                    raise InvalidConfig(f"an exchange server listens on {HOST} only")
                self._endpoint = Endpoint(address, self._endpoint.authkey)
            if authkey is not None:
                self._endpoint = Endpoint(self._endpoint.address, authkey)
        for conn in idle:
            conn.close()

    def close(self) -> None:
        """Close every connection; later calls raise ExchangeUnavailable. Idempotent."""
        with self._lock:
            self._closed = True
        self.reconnect()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        host, port = self._endpoint.address
        return f"<RemoteExchange {host}:{port} consumer={self._consumer!r}>"

    def _call(self, method: str, *args: Any) -> Any:
        with self._slots:
            conn, endpoint = self._checkout()
            done = False
            try:
                conn.send((method, args, {}))
                if not conn.poll(self._timeout_s):
                    raise TimeoutError(f"no reply within {self._timeout_s} s")
                ok, result = conn.recv()
                done = True
            except (OSError, EOFError) as exc:
                raise _unavailable(endpoint, f"lost during {method}()", exc) from exc
            finally:
                if done:
                    self._checkin(conn, endpoint)
                else:
                    conn.close()
        if ok:
            return result
        # No add_note(): the message stays exactly the server's (pytest.raises(match=) and
        # reports compare it).
        raise decode_error(*result)

    def _checkout(self) -> tuple[Wire, Endpoint]:
        while True:
            with self._lock:
                if self._closed:
                    raise ExchangeUnavailable("this RemoteExchange is closed")
                endpoint = self._endpoint
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                break
            # Between calls nothing may be readable: if something is, it is the EOF of a
            # server that went away, so this connection is dead and another one is tried.
            if not conn.poll(0):
                return conn, endpoint
            conn.close()
        try:
            return connect(endpoint.address, endpoint.authkey, self._timeout_s), endpoint
        except (OSError, EOFError) as exc:
            raise _unavailable(endpoint, "cannot connect", exc) from exc
        except AuthenticationError as exc:
            raise _unavailable(endpoint, "authentication failed (wrong authkey?)", exc) from exc

    def _checkin(self, conn: Wire, endpoint: Endpoint) -> None:
        with self._lock:
            if not self._closed and endpoint == self._endpoint:
                self._idle.append(conn)
                return
        conn.close()


def _unavailable(endpoint: Endpoint, what: str, exc: BaseException) -> ExchangeUnavailable:
    host, port = endpoint.address
    return ExchangeUnavailable(
        f"exchange server {host}:{port} unreachable: {what} ({type(exc).__name__}: {exc});"
        " the next call connects again"
    )
