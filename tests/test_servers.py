"""The test harness itself: the private redis-server fixture is real and can be killed."""

from __future__ import annotations

import socket

import pytest

from tests.servers import RedisServer


def test_redis_fixture_answers_and_dies(redis: RedisServer) -> None:
    """The fixture's server answers PING, and kill() really stops it."""
    assert redis.cli("PING").strip() == "PONG"
    redis.kill()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", redis.port), timeout=0.5):
        pass
