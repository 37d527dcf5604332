"""RedisStore without a server: URLs, and what a missing server looks like."""

from __future__ import annotations

import pytest

from messages import InvalidConfig, StoreUnavailable
from persistence import RedisStore, redact_url
from persistence.redis_server import free_port


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:7000/0", "redis://127.0.0.1:7000/0"),
        ("redis://app:pw@127.0.0.1:7000/0", "redis://app@127.0.0.1:7000/0"),
        ("redis://:pw@127.0.0.1:7000", "redis://127.0.0.1:7000"),
        ("rediss://app:p%40ss@cache.example:6380/2", "rediss://app@cache.example:6380/2"),
        ("unix:///run/redis.sock?db=1&password=pw", "unix:///run/redis.sock?db=1"),
        ("unix://:pw@/run/redis.sock", "unix:///run/redis.sock"),
    ],
)
def test_redact_url_drops_passwords(url, shown):
    assert redact_url(url) == shown


def test_nothing_listening_is_store_unavailable_naming_the_url_without_password():
    port = free_port()
    store = RedisStore(f"redis://app:hunter2@127.0.0.1:{port}/0", connect_timeout_s=1)
    with pytest.raises(
        StoreUnavailable, match=rf"^redis at redis://app@127\.0\.0\.1:{port}/0: append failed: "
    ) as caught:
        store.append(0, [("t1", b"x")])
    assert "hunter2" not in str(caught.value)


def test_bad_urls_are_invalid_config():
    with pytest.raises(InvalidConfig, match=r"^redis URL must be redis://, rediss:// or unix://"):
        RedisStore("127.0.0.1:6380")
    with pytest.raises(InvalidConfig, match=r"^unusable redis URL redis://h:notaport/0: "):
        RedisStore("redis://h:notaport/0")
