"""Shared fixtures: real servers started per test, and a clean opskit state."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import RedisServer, redis_server


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    """A private redis-server on a free port, killed after the test."""
    with redis_server() as server:
        yield server
