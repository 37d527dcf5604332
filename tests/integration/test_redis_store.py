"""What only a real Redis can show: crashes of the server, connections, auth, TLS, scripts."""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from messages import InvalidConfig, StaleFence, StoreUnavailable
from persistence import RedisServer, RedisStore
from tests.integration.conftest import ServerFactory
from tests.persistence.backends import profiles_in
from tests.persistence.worker import Model, Worker, committed, ingest

pytestmark = pytest.mark.integration

P = 1
TTL = 60_000


def new_prefix() -> str:
    return f"it-{uuid.uuid4().hex[:8]}"


def roundtrip(store: RedisStore) -> None:
    """Append, read, commit, load: every kind of call the runtime makes."""
    pid = profiles_in(store.layout, P, 1)[0]
    ids = store.append(P, [("t1", b"x"), ("t1", b"x")])
    assert ids[1] is None
    entries = store.read(P, "c", 10)
    assert [e.entry_id for e in entries] == ids[:1]
    fence = store.acquire_lease(P, "w", TTL)
    assert store.commit(fence, {pid: ({"n": 1}, entries[0].entry_id)}, [entries[0].entry_id]) == 1
    snap = store.load(pid)
    assert snap is not None
    assert (snap.state, snap.offset) == ({"n": 1}, ids[0])


def test_kill_9_with_aof_keeps_entries_snapshots_pending_dedupe_and_tokens(fresh_redis):
    server = fresh_redis()
    store = RedisStore(server.url, partitions=4)
    profiles = profiles_in(store.layout, P, 2)
    model = Model()
    fills = [(profiles[i % 2], f"tr{i}") for i in range(8)]
    ingest(store, fills)
    model.ingest(fills)
    worker = Worker(store, P, "w1", "c1")
    worker.step(5)  # takes over
    worker.step(5)  # five applied, committed and acked
    left_pending = store.read(P, "c1", 2)
    before = committed(store, profiles)

    server.kill()
    server.start()

    assert committed(store, profiles) == before  # same store object: it reconnects
    assert store.length(P) == 8
    assert store.pending_count(P, "c1") == 2
    assert ingest(store, fills[:3]) == [None, None, None]  # the dedupe index survived
    with pytest.raises(StaleFence, match=r"^partition 1 is leased to 'w1'"):
        store.acquire_lease(P, "w2", TTL)  # the lease (and its TTL) survived too
    successor = Worker(RedisStore(server.url, partitions=4), P, "w1", "c1")
    assert successor.fence.token > worker.fence.token  # the counter did not restart
    assert [e.entry_id for e in successor.store.claim_stale(P, "c1", 0)] == [
        e.entry_id for e in left_pending
    ]
    successor.store.rewind(P, "c1")
    successor.drain()
    assert committed(store, profiles) == model.applied


def test_store_unavailable_while_the_server_is_down_then_works_again(fresh_redis):
    server = fresh_redis()
    store = RedisStore(server.url, partitions=4)
    roundtrip(store)
    fence = store.acquire_lease(P + 1, "w", TTL)
    pid = profiles_in(store.layout, P + 1, 1)[0]
    server.stop()

    calls: dict[str, Callable[[], object]] = {
        "append": lambda: store.append(P, [("t9", b"x")]),
        "read": lambda: store.read(P, "c", 1),
        "commit": lambda: store.commit(fence, {pid: ({}, "1-0")}),
        "load": lambda: store.load(pid),
        "acquire_lease": lambda: store.acquire_lease(P, "v", TTL),
        "pending_count": lambda: store.pending_count(P),
        "length": lambda: store.length(P),
    }
    for action, call in calls.items():
        with pytest.raises(
            StoreUnavailable, match=rf"^redis at {re.escape(server.url)}: {action} failed: "
        ):
            call()

    server.start()  # the scripts are gone from the server: EVALSHA falls back to loading them
    assert store.append(P, [("t9", b"x")])[0] is not None
    store.commit(fence, {pid: ({"back": True}, "1-0")})
    assert store.load(pid).state == {"back": True}  # type: ignore[union-attr]


def test_server_data_loss_without_aof_recreates_the_group(fresh_redis):
    server = fresh_redis(appendonly=False)
    store = RedisStore(server.url, partitions=4)
    store.append(P, [("t1", b"x")])
    assert len(store.read(P, "c", 10)) == 1
    server.kill()
    server.start()  # everything is gone, the consumer group too
    assert store.read(P, "c", 10) == []
    ids = store.append(P, [("t1", b"x")])
    assert [e.entry_id for e in store.read(P, "c", 10)] == ids


def test_password_never_appears_in_errors(fresh_redis):
    server = fresh_redis()
    url = f"redis://someone:hunter2@127.0.0.1:{server.port}/0?password=hunter2"
    store = RedisStore(url)
    assert store.url == f"redis://someone@127.0.0.1:{server.port}/0"
    server.stop()
    with pytest.raises(StoreUnavailable) as caught:
        store.length(0)
    assert "hunter2" not in str(caught.value)
    assert "someone@127.0.0.1" in str(caught.value)


def test_acl_user_with_password(redis_server: RedisServer) -> None:
    admin = redis.Redis.from_url(redis_server.url, protocol=2)
    user, secret = f"app-{uuid.uuid4().hex[:6]}", "s3cret-pw"
    prefix = new_prefix()
    # only its own keys (one pattern covers them all), and no dangerous commands
    admin.acl_setuser(
        user,
        enabled=True,
        passwords=[f"+{secret}"],
        keys=[f"{{{prefix}*"],
        commands=["+@all", "-@dangerous"],
    )
    try:
        roundtrip(
            RedisStore(
                redis_server.url, prefix=prefix, partitions=4, username=user, password=secret
            )
        )
        in_url = redis_server.url.replace("redis://", f"redis://{user}:{secret}@")
        roundtrip(RedisStore(in_url, prefix=f"{prefix}b", partitions=4))
    finally:
        admin.acl_deluser(user)


def test_acl_refusals_are_store_unavailable(redis_server: RedisServer) -> None:
    admin = redis.Redis.from_url(redis_server.url, protocol=2)
    user, secret = f"app-{uuid.uuid4().hex[:6]}", "s3cret-pw"
    admin.acl_setuser(
        user,
        enabled=True,
        passwords=[f"+{secret}"],
        keys=["{mine*", "{theirs}:meta"],
        commands=["+@all"],
    )
    try:
        wrong = RedisStore(redis_server.url, username=user, password="not-it")
        with pytest.raises(StoreUnavailable, match=r"WRONGPASS|invalid username-password"):
            wrong.length(0)
        elsewhere = RedisStore(redis_server.url, prefix="theirs", username=user, password=secret)
        refused = r"failed: this user has no permissions to access one of the keys"
        with pytest.raises(StoreUnavailable, match=refused):
            elsewhere.length(0)
        with pytest.raises(StoreUnavailable, match=refused):  # a script's declared keys
            elsewhere.append(0, [("t1", b"x")])
        with pytest.raises(StoreUnavailable, match=refused):  # a pipeline
            elsewhere.load("p")

    finally:
        admin.acl_deluser(user)


def test_unix_socket_url(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.unix_url, prefix=new_prefix(), partitions=4)
    assert store.url == redis_server.unix_url
    roundtrip(store)


def test_tls_url(fresh_redis: ServerFactory, tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the TLS test needs the openssl command (Debian: apt-get install openssl)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    from persistence.redis_server import free_port

    tls_port = free_port()
    fresh_redis(
        config={
            "tls-port": str(tls_port),
            "tls-cert-file": str(cert),
            "tls-key-file": str(key),
            "tls-ca-cert-file": str(cert),
            "tls-auth-clients": "no",
        }
    )
    url = f"rediss://127.0.0.1:{tls_port}/0"
    roundtrip(RedisStore(url, partitions=4, client_kwargs={"ssl_ca_certs": str(cert)}))
    untrusted = RedisStore(url, partitions=4)  # the system CAs do not know this certificate
    with pytest.raises(StoreUnavailable, match=r"certificate verify failed"):
        untrusted.length(0)


def test_scripts_survive_a_script_flush(redis_url: str) -> None:
    store = RedisStore(redis_url, prefix=new_prefix(), partitions=4)
    roundtrip(store)
    redis.Redis.from_url(redis_url, protocol=2).script_flush()
    pid = profiles_in(store.layout, P, 1)[0]
    fence = store.acquire_lease(P, "w", TTL)
    store.commit(fence, {pid: ({"n": 2}, "99999999999999-0")})
    assert store.load(pid).state == {"n": 2}  # type: ignore[union-attr]


def test_another_partition_count_for_the_same_prefix_is_refused(redis_url: str) -> None:
    prefix = new_prefix()
    RedisStore(redis_url, prefix=prefix, partitions=4).length(0)
    other = RedisStore(redis_url, prefix=prefix, partitions=8)
    with pytest.raises(
        InvalidConfig,
        match=rf"^redis at {re.escape(redis_url)} holds prefix '{prefix}' with layout 1 and 4 "
        r"partitions; this store was opened with layout 1 and 8 partitions$",
    ):
        other.length(0)


def test_unsupported_url_and_too_long_blocking_reads_are_refused(redis_url: str) -> None:
    with pytest.raises(InvalidConfig, match=r"^redis URL must be redis://, rediss:// or unix://"):
        RedisStore("http://127.0.0.1:1/0")
    store = RedisStore(redis_url, prefix=new_prefix(), socket_timeout_s=1.0)
    with pytest.raises(InvalidConfig, match=r"^block_ms 1000 must be below the socket timeout"):
        store.read(0, "c", 1, block_ms=1000)


def test_every_key_a_script_touches_shares_the_partition_slot(redis_url: str) -> None:
    store = RedisStore(redis_url, prefix=new_prefix(), partitions=4)
    roundtrip(store)
    raw = redis.Redis.from_url(redis_url, protocol=2)
    keys = [k.decode() for k in raw.scan_iter(match=f"{{{store.layout.prefix}:p1}}*")]
    assert {k.rsplit(":", 1)[-1] if ":snap:" not in k else "snap" for k in keys} == {
        "journal",
        "seen",
        "lease",
        "fence",
        "snap",
    }
    assert {key_slot(k.encode()) for k in keys} == {key_slot(store.layout.tag(1).encode())}
