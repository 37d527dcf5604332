"""The journal-store contract (tests/persistence/contract.py) on a real redis-server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.persistence.backends import Backend, RedisBackend
from tests.persistence.contract import StoreContract

pytestmark = pytest.mark.integration


class TestRedisContract(StoreContract):
    @pytest.fixture
    def backend(self, redis_url: str) -> Iterator[Backend]:
        backend = RedisBackend(redis_url)
        yield backend
        backend.close()
