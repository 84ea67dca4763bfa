"""gunicorn hooks in-process: the private metrics directory, and what runs in which process."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from opskit.ratelimit import SHARED_FILE_ENV, SharedMemoryBackend
from opskit.runtime import Runtime
from opskit.serving.hooks import MULTIPROC_ENV, ServerHooks
from opskit.settings import load_settings


@pytest.fixture(autouse=True)
def clean_state() -> Iterator[None]:
    """The hooks export PROMETHEUS_MULTIPROC_DIR and the rate-limit table: restore both, or later
    servers and tests inherit them."""
    saved = {name: os.environ.pop(name, None) for name in (MULTIPROC_ENV, SHARED_FILE_ENV)}
    try:
        yield
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value


def hooks(**overrides: Any) -> ServerHooks:
    return ServerHooks(Runtime(load_settings(**overrides)))


class TestMetricsDirectory:
    def test_private_directory_when_unset(self) -> None:
        """Without PROMETHEUS_MULTIPROC_DIR the master makes a private temp directory, exports it, removes it."""
        server = hooks(web_concurrency=2)
        server.on_starting(SimpleNamespace(num_workers=2))
        path = Path(os.environ[MULTIPROC_ENV])
        assert path.is_dir() and path.parent == Path(tempfile.gettempdir()) and oct(path.stat().st_mode)[-3:] == "700"
        assert server.runtime.settings.prometheus_multiproc_dir == str(path)  # what the workers inherit
        server.on_exit(SimpleNamespace())
        assert not path.exists()

    def test_nothing_when_metrics_disabled(self) -> None:
        """With metrics off no directory is made and the variable stays unset."""
        server = hooks(metrics_enabled=False)
        server.on_starting(SimpleNamespace(num_workers=1))
        assert MULTIPROC_ENV not in os.environ
        server.on_exit(SimpleNamespace())

    def test_child_exit_without_directory_is_harmless(self) -> None:
        """child_exit before any directory exists does nothing."""
        hooks().child_exit(SimpleNamespace(), SimpleNamespace(pid=12345))


class TestRateLimitTable:
    def test_several_workers_without_redis_get_a_shared_table(self) -> None:
        """Before forking 2 workers the master makes the table and names it to them (env and runtime)."""
        server = hooks(web_concurrency=2)
        server.on_starting(SimpleNamespace(num_workers=2))
        path = os.environ[SHARED_FILE_ENV]
        assert server.runtime.settings.rate_limit_shared_file == path
        assert SharedMemoryBackend(path).sets > 0
        server.on_exit(SimpleNamespace())

    @pytest.mark.parametrize("overrides", [{"web_concurrency": 1}, {"redis_url": "redis://127.0.0.1:1/0"}])
    def test_one_worker_or_redis_gets_none(self, overrides: dict[str, Any]) -> None:
        """One worker decides alone; with Redis the buckets are in Redis: no table, nothing exported."""
        server = hooks(**overrides)
        server.on_starting(SimpleNamespace(num_workers=overrides.get("web_concurrency", 2)))
        assert SHARED_FILE_ENV not in os.environ
        assert server.runtime.settings.rate_limit_shared_file == ""
        server.on_exit(SimpleNamespace())


class TestWorkerExit:
    def test_only_in_the_worker_itself(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """gunicorn also calls worker_exit in the master for a vanished worker: nothing is shut down there."""
        calls: list[str] = []
        import opskit.tracing

        monkeypatch.setattr(opskit.tracing, "shutdown", lambda: calls.append("shutdown"))
        server = hooks()
        server.worker_exit(SimpleNamespace(), SimpleNamespace(pid=os.getpid() + 1))
        assert calls == []
        server.worker_exit(SimpleNamespace(), SimpleNamespace(pid=os.getpid()))
        assert calls == ["shutdown"]
