"""Shared fixtures: real servers started per test, and a clean opskit state."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
import structlog

import opskit.runtime
from opskit import health
from tests.servers import RedisServer, redis_server


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    """A private redis-server on a free port, killed after the test."""
    with redis_server() as server:
        yield server


@pytest.fixture(autouse=True)
def _clean_opskit_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with no runtime, no readiness checks, no shutdown mark, default structlog and
    no frozen objects (an app's lifespan freezes the GC's objects; the test process must still
    collect them)."""
    monkeypatch.setattr(opskit.runtime, "_current", None)
    health.reset()
    yield
    health.reset()
    structlog.reset_defaults()
    gc.unfreeze()


LogReader = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def log_lines(capsys: pytest.CaptureFixture[str]) -> LogReader:
    """Read what was written to stdout since the last call, each line parsed as JSON.

    A line that is not JSON fails the test: that is the promise of opskit's logging.
    """

    def read() -> list[dict[str, Any]]:
        out = capsys.readouterr().out
        return [orjson.loads(line) for line in out.splitlines() if line.strip()]

    return read
