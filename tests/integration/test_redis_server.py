"""RedisServer: the library that starts real servers for tests, drills and benchmarks."""

from __future__ import annotations

import pytest
import redis

from messages import InvalidConfig, StoreUnavailable
from persistence import RedisServer

pytestmark = pytest.mark.integration


def client(server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url, protocol=2, socket_timeout=5)


def test_start_stop_restart_keep_port_and_directory():
    with RedisServer(appendonly=True) as server:
        assert server.running
        assert server.pid is not None
        assert server.port != 6379
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        port, directory = server.port, server.directory
        client(server).set("k", "v")
        assert client(server).config_get("appendonly") == {"appendonly": "yes"}
        assert client(server).config_get("save") == {"save": ""}
        server.restart()
        assert (server.port, server.directory) == (port, directory)
        assert client(server).get("k") == b"v"
        server.start()  # already running: nothing happens
        server.stop()
        assert not server.running
        assert server.pid is None
        server.stop()  # already stopped: nothing happens
    assert not directory.exists()


def test_kill_loses_everything_without_aof_and_nothing_with_it():
    with RedisServer(appendonly=False) as volatile, RedisServer(appendonly=True) as durable:
        for server in (volatile, durable):
            client(server).xadd("s", {"p": b"x"})
            server.kill()
            assert not server.running
            server.start()
        assert client(volatile).xlen("s") == 0
        assert client(durable).xlen("s") == 1


def test_appendfsync_and_extra_config_are_applied():
    with RedisServer(appendfsync="always", config={"maxmemory": "64mb"}) as server:
        conf = client(server).config_get("*")
        assert conf["appendfsync"] == "always"
        assert conf["maxmemory"] == str(64 * 1024 * 1024)


def test_unix_socket_url():
    with RedisServer(unix_socket=True) as server:
        assert server.unix_url == f"unix://{server.directory}/redis.sock"
        assert redis.Redis.from_url(server.unix_url, protocol=2).ping() is True
    with RedisServer() as tcp_only, pytest.raises(InvalidConfig, match=r"unix_socket=True"):
        _ = tcp_only.unix_url


def test_a_missing_binary_is_a_clear_error():
    with pytest.raises(
        StoreUnavailable,
        match=r"^redis-server binary '/nonexistent/redis-server' not found \(PATH or path\): "
        r"install Redis \(Debian/Ubuntu: apt-get install redis-server\)",
    ):
        RedisServer(binary="/nonexistent/redis-server")


def test_refuses_port_6379_and_unknown_fsync_policies():
    with pytest.raises(InvalidConfig, match=r"^port 6379 belongs to the system's redis-server"):
        RedisServer(port=6379)
    with pytest.raises(InvalidConfig, match=r"^appendfsync must be always, everysec or no"):
        RedisServer(appendfsync="sometimes")  # type: ignore[arg-type]


def test_a_server_that_cannot_start_reports_its_output():
    server = RedisServer(config={"no-such-directive": "1"})
    try:
        with pytest.raises(
            StoreUnavailable, match=r"(?s)exited with status 1 while starting.*Bad directive"
        ):
            server.start()
        assert not server.running
    finally:
        server.close()
    assert not server.directory.exists()
