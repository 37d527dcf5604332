"""What crosses the loopback connection between :class:`RemoteExchange` and the server.

A request is the pickled tuple ``(method, args, kwargs)``; a reply is ``(True, result)`` or
``(False, (error_type_name, message))``. Pickle keeps ints, Decimals, ``Side`` and ``Market``
exact; it is safe here because both ends prove they know the authkey (HMAC challenge of
:mod:`multiprocessing.connection`) before anything is unpickled, and the server listens on
127.0.0.1 only.
"""

from __future__ import annotations

import builtins
import socket
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict

from messages import errors

#: The only interface the server listens on.
HOST = "127.0.0.1"

Request = tuple[str, tuple[Any, ...], dict[str, Any]]
Reply = tuple[bool, Any]
if TYPE_CHECKING:
    Wire = Connection[Any, Any]
else:  # Connection is generic in typeshed only
    Wire = Connection


class Endpoint(NamedTuple):
    """Where an exchange server listens and the key that opens it: ``RemoteExchange(*ep)``."""

    address: tuple[str, int]
    authkey: bytes

    def __repr__(self) -> str:  # the key stays out of logs and reports
        return f"Endpoint(address={self.address!r}, authkey=<{len(self.authkey)} bytes>)"


class DriverStatus(TypedDict):
    """One price driver of the server."""

    symbol: str
    steps: int
    total: int
    paused: bool
    finished: bool
    error: str | None


class ServerStatus(TypedDict):
    """The server process: its drivers, connections and live fill feed."""

    pid: int
    epoch: str
    clients: int
    drivers: list[DriverStatus]
    unattended_steps: int
    unattended_trades: int
    deliveries: int
    consumers: dict[str, int]


def encode_error(exc: BaseException) -> tuple[str, str]:
    """The type name and message of an error raised in the server."""
    args = exc.args
    message = args[0] if len(args) == 1 and isinstance(args[0], str) else str(exc)
    return type(exc).__name__, message


def decode_error(name: str, message: str) -> Exception:
    """The client-side error for :func:`encode_error`'s result: the same capflow error type
    (or builtin exception) with the same message; any other type becomes a RuntimeError."""
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, errors.CapflowError):
        return cls(message)
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except TypeError:  # e.g. UnicodeDecodeError: several required arguments
            pass
    return RuntimeError(f"the exchange server raised {name}: {message}")


def configure(sock: socket.socket) -> None:
    """Blocking, no Nagle delay: one small request, one small reply, as fast as possible."""
    sock.setblocking(True)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def connect(address: tuple[str, int], authkey: bytes, timeout_s: float) -> Wire:
    """An authenticated connection to the server (raises OSError/EOFError on failure).

    ``multiprocessing.connection.Client`` without its unbounded waits: the TCP connect and the
    server's challenge each get ``timeout_s``.
    """
    sock = socket.create_connection(address, timeout=timeout_s)
    configure(sock)
    conn: Wire = Connection(sock.detach())
    try:
        if not conn.poll(timeout_s):
            raise TimeoutError(f"no authentication challenge within {timeout_s} s")
        answer_challenge(conn, authkey)
        deliver_challenge(conn, authkey)
    except BaseException:
        conn.close()
        raise
    return conn


def accept(conn: Wire, authkey: bytes) -> None:
    """The server's side of :func:`connect`'s handshake."""
    deliver_challenge(conn, authkey)
    answer_challenge(conn, authkey)
