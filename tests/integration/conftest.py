"""A real redis-server per test session (AOF on, fsync every second), and fresh ones on demand.

Nothing here is skipped: without a ``redis-server`` binary the fixtures fail and say what to
install. Tests on the shared server isolate themselves by key prefix; tests that stop, kill or
reconfigure a server take a ``fresh_redis`` of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from messages import StoreUnavailable
from persistence import RedisServer

ServerFactory = Callable[..., RedisServer]


def _start(**options: object) -> RedisServer:
    try:
        settings: dict[str, Any] = {"appendonly": True, "appendfsync": "everysec", **options}
        return RedisServer(**settings).start()
    except StoreUnavailable as exc:
        pytest.fail(f"integration tests need a working redis-server: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The session's server; do not stop it (use ``fresh_redis`` for that)."""
    server = _start(unix_socket=True)
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def fresh_redis() -> Iterator[ServerFactory]:
    """Start servers of the test's own (closed at the end of the test)."""
    servers: list[RedisServer] = []

    def start(**options: object) -> RedisServer:
        server = _start(**options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
