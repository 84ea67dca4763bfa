"""The middleware's rare-event hooks: ``process_started`` once per process, ``request_failed`` only on errors."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from starlette.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

import opskit
from opskit.component import Component
from opskit.exchange import Exchange
from opskit.metrics.registry import Registry
from opskit.middleware import OpskitMiddleware
from opskit.runtime import Runtime


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": f"{message['type']}.complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})
        return
    if scope["path"] == "/boom":
        raise LookupError("boom")
    if scope["path"] == "/half":  # the response begins, then the app raises
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise LookupError("half")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


class Starts(Component):
    """Records the pid of the process each process_started ran in."""

    def __init__(self, fail: bool = False) -> None:
        self.pids: list[int] = []
        self.fail = fail

    def process_started(self) -> None:
        self.pids.append(os.getpid())
        if self.fail:
            raise RuntimeError("process_started broke")


class Records(Component):
    """Records, in order, which of the closing hooks ran and what they saw."""

    def __init__(self, name: str, log: list[tuple[Any, ...]], fail: bool = False) -> None:
        self.name = name
        self.log = log
        self.fail = fail

    def request_failed(self, ex: Exchange) -> None:
        self.log.append((self.name, "failed", type(ex.exception).__name__, ex.status, bool(ex.end), ex.path))
        if self.fail:
            raise RuntimeError("request_failed broke")

    def request_closed(self, ex: Exchange) -> None:
        self.log.append((self.name, "closed", ex.path))


def middleware(*components: Component, **overrides: Any) -> tuple[OpskitMiddleware, Registry]:
    runtime = Runtime(opskit.load_settings(**overrides), app)
    registry = runtime._registry = Registry(None)
    return OpskitMiddleware(app, runtime, list(components)), registry


def errors(registry: Registry) -> dict[tuple[str, ...], float]:
    return {
        s.labels: s.data.values[0]
        for metric, series in registry.collect()
        if metric.name == "opskit_component_errors_total"
        for s in series
    }


def get(wrapped: OpskitMiddleware, path: str) -> int:
    """One request straight through the ASGI interface, no lifespan: the response's status."""
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    scope = {"type": "http", "method": "GET", "path": path, "headers": [], "http_version": "1.1"}
    with contextlib.suppress(LookupError):
        asyncio.run(wrapped(scope, receive, send))
    return statuses[0]


class TestProcessStarted:
    def test_without_lifespan_the_first_request_starts_the_process_once(self) -> None:
        """A server without lifespan: the first request calls process_started, later ones do not."""
        starts = Starts()
        wrapped, _ = middleware(starts)
        assert starts.pids == []  # building the middleware starts nothing (a preloading master)
        for _ in range(3):
            assert get(wrapped, "/") == 200
        assert starts.pids == [os.getpid()]

    def test_lifespan_startup_starts_the_process_before_any_request(self) -> None:
        """With lifespan the start happens at startup; requests then do not call it again."""
        starts = Starts()
        wrapped, _ = middleware(starts)
        with TestClient(wrapped) as c:
            assert starts.pids == [os.getpid()]
            assert c.get("/").status_code == 200
        assert starts.pids == [os.getpid()]

    def test_a_websocket_connection_can_be_the_first(self) -> None:
        """A connection that arrives before any request starts the process too."""
        starts = Starts()
        wrapped, _ = middleware(starts)
        with TestClient(wrapped).websocket_connect("/ws"):
            pass
        assert starts.pids == [os.getpid()]

    def test_a_forked_child_starts_its_own(self) -> None:
        """After fork the child's first request calls process_started again, in the child; the parent's
        start does not count for it. A child forked before any start (a preloading master) starts once."""
        starts = Starts()
        wrapped, _ = middleware(starts)

        def in_child() -> list[int]:
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover (child)
                os.close(read_end)
                before = len(starts.pids)
                get(wrapped, "/")
                get(wrapped, "/")
                os.write(write_end, f"{before} {' '.join(map(str, starts.pids))}".encode())
                os._exit(0)
            os.close(write_end)
            with os.fdopen(read_end, "rb") as pipe:
                before, *pids = map(int, pipe.read().split())
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            assert len(pids) == before + 1 and pids[-1] == pid
            return pids

        assert in_child()[:-1] == []  # forked from a master that never served
        get(wrapped, "/")
        assert in_child()[:-1] == [os.getpid()]  # forked from a process that had started
        assert starts.pids == [os.getpid()]

    def test_a_failing_start_is_counted_once_and_requests_go_on(self) -> None:
        """process_started that raises: counted and logged under the hook's name, not retried per request."""
        starts = Starts(fail=True)
        wrapped, registry = middleware(starts)
        for _ in range(3):
            assert get(wrapped, "/") == 200
        assert len(starts.pids) == 1
        assert errors(registry) == {("Starts", "process_started"): 1.0}

    def test_proxy_forwarding_still_applies_to_the_first_request(self) -> None:
        """With trusted proxies the first request, which also starts the process, gets its forwarded client."""
        clients: list[Any] = []

        class Client(Starts):
            def request_started(self, ex: Exchange) -> None:
                clients.append(ex.scope["client"])

        starts = Client()
        wrapped, _ = middleware(starts, trusted_proxies="127.0.0.0/8")
        c = TestClient(wrapped, client=("127.0.0.1", 5000))
        for _ in range(2):
            assert c.get("/", headers={"X-Forwarded-For": "203.0.113.7"}).status_code == 200
        assert [client[0] for client in clients] == ["203.0.113.7", "203.0.113.7"]
        assert len(starts.pids) == 1


class TestRequestFailed:
    def test_called_only_when_the_app_raised_after_the_response_before_closed(self) -> None:
        """A request that succeeds never reaches request_failed; one that raises does, once the 500 is
        sent, in reverse component order, before request_closed."""
        log: list[tuple[Any, ...]] = []
        wrapped, _ = middleware(Records("a", log), Records("b", log))
        assert get(wrapped, "/") == 200
        assert log == [("b", "closed", "/"), ("a", "closed", "/")]
        log.clear()
        assert get(wrapped, "/boom") == 500
        assert log == [
            ("b", "failed", "LookupError", 500, True, "/boom"),
            ("a", "failed", "LookupError", 500, True, "/boom"),
            ("b", "closed", "/boom"),
            ("a", "closed", "/boom"),
        ]

    def test_a_response_begun_before_the_exception_is_finished_first(self) -> None:
        """The app began its response then raised: request_failed sees the request ended, with its status."""
        log: list[tuple[Any, ...]] = []
        wrapped, _ = middleware(Records("a", log))
        assert get(wrapped, "/half") == 200
        assert log == [("a", "failed", "LookupError", 200, True, "/half"), ("a", "closed", "/half")]

    def test_a_failing_hook_is_counted_and_the_others_still_run(self) -> None:
        """request_failed that raises: counted under its name; the next component's and request_closed still run."""
        log: list[tuple[Any, ...]] = []
        wrapped, registry = middleware(Records("a", log), Records("b", log, fail=True))
        assert get(wrapped, "/boom") == 500
        assert [entry[:2] for entry in log] == [("b", "failed"), ("a", "failed"), ("b", "closed"), ("a", "closed")]
        assert errors(registry) == {("Records", "request_failed"): 1.0}

    def test_a_component_with_only_request_failed_is_not_skipped(self) -> None:
        """request_failed is a per-request hook: a component with it alone keeps the full path."""

        class OnlyFailed(Component):
            def __init__(self) -> None:
                self.seen: list[str] = []

            def request_failed(self, ex: Exchange) -> None:
                self.seen.append(ex.path)

        only = OnlyFailed()
        wrapped, _ = middleware(only)
        assert not wrapped._direct
        assert get(wrapped, "/boom") == 500
        assert only.seen == ["/boom"]


def test_a_process_hook_alone_leaves_requests_on_the_direct_path() -> None:
    """process_started is no per-request hook: a component with it alone keeps the middleware's direct path."""
    starts = Starts()
    wrapped, _ = middleware(starts)
    assert wrapped._direct
    assert get(wrapped, "/") == 200
    assert starts.pids == [os.getpid()]
