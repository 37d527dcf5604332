"""Random crash schedules against a real redis-server (tests/persistence/machine.py)."""

from __future__ import annotations

import pytest

from tests.persistence.backends import RedisBackend
from tests.persistence.machine import run_machine

pytestmark = pytest.mark.integration


def test_redis_store_applies_every_fill_exactly_once_under_random_crashes(redis_url: str) -> None:
    run_machine(lambda: RedisBackend(redis_url), max_examples=50)
