"""The OTLP export threads start once per serving process and cost requests nothing.

A process that only built the app (a preloading master) runs none; without lifespan the first
request starts them; a forked child starts its own, whose exports reach the collector with the
child's pid.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

import opskit
from opskit.component import HOOKS, Component, overrides
from opskit.logging.otlp import OtlpLogsComponent
from opskit.logging.writer import WRITER
from opskit.metrics.otlp import OtlpMetricsComponent
from opskit.middleware import OpskitMiddleware
from tests.tracing.receiver import OtlpReceiver, attributes, otlp_receiver


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as r:
        yield r


@pytest.fixture(autouse=True)
def _untapped_writer() -> Iterator[None]:
    yield
    WRITER.tap = None
    WRITER.stdout = True


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _wrapped(receiver: OtlpReceiver) -> tuple[OpskitMiddleware, OtlpMetricsComponent, OtlpLogsComponent]:
    wrapped = opskit.wrap(
        app,
        metrics_exporter=("otlp",),
        logs_exporter="otlp",
        log_stdout=False,
        otlp_endpoint=receiver.endpoint,
        tracing_enabled=False,
        runtime_enabled=False,
    )
    (metrics,) = (c for c in wrapped.components if isinstance(c, OtlpMetricsComponent))
    (logs,) = (c for c in wrapped.components if isinstance(c, OtlpLogsComponent))
    return wrapped, metrics, logs


def _get(wrapped: OpskitMiddleware) -> None:
    """One request straight through the ASGI interface, as a server without lifespan sends it."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        pass

    scope = {"type": "http", "method": "GET", "path": "/work", "headers": [], "http_version": "1.1"}
    asyncio.run(wrapped(scope, receive, send))


def _pids(requests: list[Any], field: str) -> set[int]:
    return {attributes(r.resource.attributes)["process.pid"] for request in requests for r in getattr(request, field)}


def _serve_in_child(wrapped: OpskitMiddleware, metrics: OtlpMetricsComponent, logs: OtlpLogsComponent) -> int:
    """Fork; the child checks its threads start on its first request only, exports on its way out."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover (child)
        code = 1
        try:
            if not (metrics.thread.running or logs.thread.running):
                _get(wrapped)
                if metrics.thread.running and logs.thread.running:
                    code = 0
            metrics.thread.stop()
            logs.thread.stop()  # the last exports leave with the child's pid
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child's threads did not start on its first request alone"
    return pid


class TestProcessStart:
    def test_the_components_have_no_per_request_hook(self, receiver: OtlpReceiver) -> None:
        """The OTLP components implement process_started and shutdown, nothing a request calls; the
        middleware's per-request hook tuples hold neither."""
        wrapped, metrics, logs = _wrapped(receiver)
        try:
            for component in (metrics, logs):
                assert {hook for hook in HOOKS if overrides(component, hook)} == {"process_started", "shutdown"}
            per_request: list[tuple[tuple[Component, Any], ...]] = [
                wrapped._on_start,
                wrapped._gates,
                wrapped._on_response,
                wrapped._on_finish,
                wrapped._on_fail,
                wrapped._on_close,
                wrapped._ws_started,
                wrapped._ws_accepted,
                wrapped._ws_closed,
            ]
            hooked = {type(component) for hooks in per_request for component, _ in hooks}
            assert hooked and not hooked & {OtlpMetricsComponent, OtlpLogsComponent}
        finally:
            metrics.thread.stop()
            logs.thread.stop()

    def test_first_request_and_forked_children_start_their_own_threads(self, receiver: OtlpReceiver) -> None:
        """Built, the app runs no thread (a preloading master); a child forked from it starts both on its
        first request, as does the process itself, and a child forked after that starts its own again.
        Each child's exports carry its pid."""
        wrapped, metrics, logs = _wrapped(receiver)
        try:
            assert not metrics.thread.running and not logs.thread.running
            first = _serve_in_child(wrapped, metrics, logs)
            assert not metrics.thread.running and not logs.thread.running
            _get(wrapped)
            assert metrics.thread.running and logs.thread.running
            second = _serve_in_child(wrapped, metrics, logs)
            assert metrics.thread.running and logs.thread.running
        finally:
            metrics.thread.stop()
            logs.thread.stop()
        assert _pids(receiver.metrics(), "resource_metrics") == {first, second, os.getpid()}
        assert {first, second} <= _pids(receiver.logs(), "resource_logs")
