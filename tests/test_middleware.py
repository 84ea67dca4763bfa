"""The opskit middleware in-process: request IDs everywhere, one pass, errors, health, websockets."""

from __future__ import annotations

import asyncio
import gc
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from starlette.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

import opskit
import opskit.tracing
from opskit.component import Component
from opskit.exchange import Exchange
from opskit.health import HealthComponent
from opskit.metrics.registry import Registry
from opskit.middleware import OpskitMiddleware
from opskit.request_ids import RequestIdComponent
from opskit.runtime import Runtime
from tests.apps import full
from tests.conftest import LogReader

HEX32 = re.compile(r"[0-9a-f]{32}")


# Settings every client() of the running test starts from (see the ``features`` fixture).
CLIENT_DEFAULTS: dict[str, Any] = {}


def client(**overrides: Any) -> TestClient:
    return TestClient(full.create(**{**CLIENT_DEFAULTS, **overrides}), raise_server_exceptions=False)


# With no component on, requests take the middleware's lighter path; request IDs must behave the same.
REQUEST_ID_ONLY = {
    "access_log_enabled": False,
    "metrics_enabled": False,
    "tracing_enabled": False,
    "ratelimit_enabled": False,
    "runtime_enabled": False,
    "overload_enabled": False,
}


@pytest.fixture(params=["all-features", "request-id-only"])
def features(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "request-id-only":
        CLIENT_DEFAULTS.update(REQUEST_ID_ONLY)
    try:
        yield request.param
    finally:
        CLIENT_DEFAULTS.clear()


class TestRequestIdOnlyPath:
    def test_request_id_only_takes_the_light_path(self) -> None:
        """With request IDs and health alone the middleware skips the per-request Exchange."""
        stack = full.create(**REQUEST_ID_ONLY).build_middleware_stack()
        assert isinstance(stack, OpskitMiddleware)
        assert stack._lean
        assert {type(c) for c in stack.components} == {RequestIdComponent, HealthComponent}

    def test_with_no_per_request_feature_requests_go_straight_to_the_app(self) -> None:
        """Runtime health alone has nothing to do per request: the app gets the server's own
        ``receive`` and ``send``, and the probes are still answered."""
        seen: list[tuple[object, object]] = []

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                seen.append((receive, send))
                await send({"type": "http.response.start", "status": 204, "headers": []})
                await send({"type": "http.response.body", "body": b""})

        middleware = opskit.wrap(app, **{**REQUEST_ID_ONLY, "request_id_enabled": False, "runtime_enabled": True})
        assert isinstance(middleware, OpskitMiddleware)
        assert middleware._direct
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": "/x", "headers": [], "query_string": b""}
        asyncio.run(middleware(scope, receive, send))
        assert seen == [(receive, send)]
        assert sent[0]["status"] == 204
        assert TestClient(middleware).get("/healthz").status_code == 200


@pytest.mark.usefixtures("features")
class TestRequestId:
    def test_valid_incoming_id_is_echoed(self) -> None:
        """A safe incoming X-Request-ID is kept, returned, and readable in the endpoint."""
        rid = "req-42_a.b:c"
        r = client().get("/items/1", headers={"X-Request-ID": rid})
        assert r.headers["x-request-id"] == rid
        assert r.json()["request_id"] == rid

    def test_missing_id_is_generated_as_uuid4_hex(self) -> None:
        """Without a header the ID is a fresh UUID4 in hex."""
        r = client().get("/items/1")
        rid = r.headers["x-request-id"]
        assert HEX32.fullmatch(rid) and rid[12] == "4"
        assert r.json()["request_id"] == rid

    def test_uuid7_format(self) -> None:
        """request_id_format=uuid7 generates version 7 IDs."""
        rid = client(request_id_format="uuid7").get("/items/1").headers["x-request-id"]
        assert HEX32.fullmatch(rid) and rid[12] == "7"

    @pytest.mark.parametrize(
        "bad",
        [b"x" * 129, b"abc\r\nx-injected: 1", b"caf\xc3\xa9", b"a b", b'"quoted"', b"../../etc", b""],
        ids=["too-long", "newline", "non-ascii", "space", "quotes", "slash", "empty"],
    )
    def test_invalid_incoming_id_is_replaced_and_logged_escaped(self, bad: bytes, log_lines: LogReader) -> None:
        """An unsafe ID is replaced by a generated one; the rejection is logged once, escaped."""
        c = client()
        log_lines()
        r = c.get("/items/1", headers=[(b"x-request-id", bad)])
        rid = r.headers["x-request-id"]
        assert HEX32.fullmatch(rid)
        assert r.json()["request_id"] == rid
        lines = log_lines()
        rejections = [line for line in lines if line["event"] == "invalid request id replaced"]
        assert len(rejections) == 1
        assert rejections[0]["request_id"] == rid
        assert "\n" not in rejections[0]["rejected"] and "\r" not in rejections[0]["rejected"]

    def test_128_characters_is_the_limit(self) -> None:
        """Exactly 128 safe characters are accepted."""
        rid = "a" * 128
        assert client().get("/items/1", headers={"X-Request-ID": rid}).headers["x-request-id"] == rid

    def test_incoming_ids_can_be_ignored(self) -> None:
        """request_id_trust_incoming=False always generates."""
        r = client(request_id_trust_incoming=False).get("/items/1", headers={"X-Request-ID": "mine"})
        assert r.headers["x-request-id"] != "mine"

    def test_custom_header_name(self) -> None:
        """The header name is configurable, in and out."""
        r = client(request_id_header="X-Correlation-ID").get("/items/1", headers={"X-Correlation-ID": "corr-1"})
        assert r.headers["x-correlation-id"] == "corr-1"
        assert "x-request-id" not in r.headers

    def test_id_on_unhandled_500_and_in_its_logs(self, log_lines: LogReader, features: str) -> None:
        """An unhandled exception's 500 carries the ID, and so do the log lines of that request."""
        c = client()
        log_lines()
        r = c.get("/boom", headers={"X-Request-ID": "boom-1"})
        assert r.status_code == 500
        assert r.headers["x-request-id"] == "boom-1"
        lines = [line for line in log_lines() if line.get("request_id") == "boom-1"]
        events = [line["event"] for line in lines]
        assert "about to fail" in events
        assert "unhandled exception" in events
        error = next(line for line in lines if line["event"] == "unhandled exception")
        assert error["level"] == "error"
        assert error["exception"][0]["exc_type"] == "RuntimeError"
        assert events.count("unhandled exception") == 1
        if features == "all-features":
            access = next(line for line in lines if line["event"] == "request")
            assert access["status"] == 500

    def test_id_on_422_validation_error(self) -> None:
        """FastAPI's 422 response carries the ID."""
        r = client().get("/items/not-a-number", headers={"X-Request-ID": "val-1"})
        assert r.status_code == 422
        assert r.headers["x-request-id"] == "val-1"

    def test_id_in_custom_exception_handler(self) -> None:
        """Exception handlers run inside the request context."""
        r = client().get("/teapot", headers={"X-Request-ID": "tea-1"})
        assert r.status_code == 418 and r.headers["x-request-id"] == "tea-1"
        assert full.seen["handler_request_id"] == "tea-1"

    def test_id_in_sync_endpoint_and_background_task(self, log_lines: LogReader) -> None:
        """Sync endpoints (thread pool) and BackgroundTasks see the same ID."""
        c = client()
        assert c.get("/sync", headers={"X-Request-ID": "sync-1"}).json()["request_id"] == "sync-1"
        c.get("/background", headers={"X-Request-ID": "bg-1"})
        assert full.seen["background_request_id"] == "bg-1"
        lines = log_lines()
        assert any(line["event"] == "sync endpoint" and line["request_id"] == "sync-1" for line in lines)
        assert any(line["event"] == "background job ran" and line["request_id"] == "bg-1" for line in lines)

    def test_no_id_outside_requests(self) -> None:
        """opskit.request_id() is None outside a request."""
        client().get("/items/1")
        assert opskit.request_id() is None

    def test_websocket_gets_an_id(self) -> None:
        """A websocket handshake gets an ID in the accept headers and in the context."""
        with client().websocket_connect("/ws", headers={"X-Request-ID": "ws-1"}) as ws:
            ws.send_text("hi")
            assert ws.receive_text() == "echo hi True"

    def test_disabled(self) -> None:
        """request_id_enabled=False adds no header."""
        r = client(request_id_enabled=False).get("/items/1")
        assert "x-request-id" not in r.headers
        assert r.json()["request_id"] is None


class TestAccessLog:
    def test_one_line_per_request_with_route_template(self, log_lines: LogReader) -> None:
        """Each request writes exactly one access line with the route template and request fields."""
        c = client()
        log_lines()
        c.get("/items/7?q=1", headers={"X-Request-ID": "acc-1", "User-Agent": "probe/1.0"})
        access = [line for line in log_lines() if line["event"] == "request"]
        assert len(access) == 1
        line = access[0]
        assert line["logger"] == "opskit.access"
        assert line["method"] == "GET"
        assert line["route"] == "/items/{item_id}"
        assert line["path"] == "/items/7"
        assert line["status"] == 200
        assert line["request_id"] == "acc-1"
        assert line["user_agent"] == "probe/1.0"
        assert line["response_bytes"] > 0
        assert line["duration_ms"] >= 0 and round(line["duration_ms"], 3) == line["duration_ms"]
        assert line["client"] == "testclient"

    def test_routes_of_routers_mounts_and_unmatched(self, log_lines: LogReader) -> None:
        """Prefixed routers and mounted sub-apps log full templates; unknown paths one value."""
        c = client()
        log_lines()
        c.get("/api/v1/users/3")
        c.get("/sub/hello/ann")
        c.get("/no/such/path")
        c.get("/sub/nothing-here")
        routes = [line["route"] for line in log_lines() if line["event"] == "request"]
        assert routes == ["/api/v1/users/{user_id}", "/sub/hello/{name}", "__unmatched__", "__unmatched__"]

    def test_health_endpoints_are_not_logged(self, log_lines: LogReader) -> None:
        """Probes do not flood the access log."""
        c = client()
        log_lines()
        c.get("/healthz")
        c.get("/readyz")
        assert not [line for line in log_lines() if line["event"] == "request"]

    def test_excluded_paths_are_configurable(self, log_lines: LogReader) -> None:
        """Exact and prefix exclusions."""
        c = client(access_log_exclude_paths="/items/*,/sync")
        log_lines()
        c.get("/items/1")
        c.get("/sync")
        c.get("/stream")
        assert [line["path"] for line in log_lines() if line["event"] == "request"] == ["/stream"]

    def test_streamed_bytes_are_counted(self, log_lines: LogReader) -> None:
        """response_bytes sums every body chunk."""
        c = client()
        log_lines()
        body = c.get("/stream").content
        line = next(line for line in log_lines() if line["event"] == "request")
        assert line["response_bytes"] == len(body)


class TestHealth:
    def test_liveness(self) -> None:
        """/healthz answers 200 JSON."""
        r = client().get("/healthz")
        assert r.status_code == 200 and r.json() == {"status": "ok"}

    def test_readiness_flips_when_a_check_fails(self) -> None:
        """/readyz is 200 while checks pass and 503 naming the failed check otherwise."""
        state = {"ok": True}

        async def database() -> bool:
            if not state["ok"]:
                raise ConnectionError("refused")
            return True

        opskit.add_readiness_check("database", database)
        c = client()
        r = c.get("/readyz")
        assert r.status_code == 200 and r.json()["checks"] == {"database": "ok"}
        state["ok"] = False
        r = c.get("/readyz")
        assert r.status_code == 503
        assert r.json()["failed"] == ["database"]
        assert "ConnectionError" in r.json()["checks"]["database"]

    def test_slow_check_times_out(self) -> None:
        """A check slower than the timeout fails instead of hanging the probe."""
        import asyncio

        async def stuck() -> None:
            await asyncio.sleep(10)

        opskit.add_readiness_check("stuck", stuck)
        r = client(readiness_timeout=0.05).get("/readyz")
        assert r.status_code == 503 and "timed out" in r.json()["checks"]["stuck"]

    def test_readiness_is_503_once_shutdown_begins(self) -> None:
        """After begin_shutdown() the probe fails at once; liveness still passes."""
        c = client()
        opskit.begin_shutdown()
        assert c.get("/readyz").status_code == 503
        assert c.get("/readyz").json() == {"status": "shutting_down"}
        assert c.get("/healthz").status_code == 200

    def test_paths_configurable_and_out_of_openapi(self) -> None:
        """Custom probe paths; opskit's endpoints never appear in the OpenAPI schema."""
        c = client(health_path="/live", readiness_path="/ready")
        assert c.get("/live").status_code == 200
        assert c.get("/ready").status_code == 200
        paths = c.get("/openapi.json").json()["paths"]
        assert not {"/live", "/ready", "/healthz", "/readyz"} & set(paths)

    def test_disabled(self) -> None:
        """health_enabled=False leaves the paths to the app (404 here)."""
        assert client(health_enabled=False).get("/healthz").status_code == 404

    def test_lifespan_shutdown_marks_not_ready(self) -> None:
        """The ASGI lifespan shutdown also begins opskit's shutdown."""
        with client():
            assert not opskit.is_shutting_down()
        assert opskit.is_shutting_down()


class TestGcFreeze:
    @pytest.fixture(autouse=True)
    def unfrozen(self) -> Iterator[None]:
        gc.unfreeze()
        yield
        gc.unfreeze()

    def test_objects_of_a_started_app_are_frozen(self) -> None:
        """After lifespan startup the app's objects sit in the permanent generation, not in the GC's."""
        with TestClient(full.create()) as c:
            assert gc.get_freeze_count() > 10_000
            assert c.get("/items/1").status_code == 200

    def test_freezing_can_be_switched_off(self) -> None:
        """gc_freeze=False leaves the garbage collector as it was."""
        with TestClient(full.create(gc_freeze=False)) as c:
            assert gc.get_freeze_count() == 0
            assert c.get("/items/1").status_code == 200


class TestInstall:
    def test_fastapi_native_metrics_and_logs_are_handed_over(self) -> None:
        """FastAPI's own OpenTelemetry request metrics and log records give way to opskit's."""
        app = FastAPI()
        opskit.instrument(app)
        TestClient(app).get("/healthz")
        assert app._telemetry["metrics"] is False and app._telemetry["logs"] is False
        off = FastAPI()
        opskit.instrument(off, metrics_enabled=False, logging_enabled=False)
        TestClient(off).get("/healthz")
        assert off._telemetry["metrics"] is True and off._telemetry["logs"] is True

    def test_fastapi_metrics_with_the_apps_own_provider_are_kept(self) -> None:
        """An app that handed FastAPI its own meter provider still gets FastAPI's request metrics."""
        reader = InMemoryMetricReader()
        app = FastAPI(telemetry={"meter_provider": MeterProvider(metric_readers=[reader])})

        @app.get("/ping")
        async def ping() -> dict[str, bool]:
            return {"ok": True}

        opskit.instrument(app)
        assert TestClient(app).get("/ping").status_code == 200
        data = reader.get_metrics_data()
        assert data is not None
        names = {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
        assert "http.server.request.duration" in names

    def test_instrument_twice_does_not_double_wrap(self, log_lines: LogReader) -> None:
        """A second instrument() is a no-op: one access line, one header value."""
        app = full.create()
        opskit.instrument(app)
        c = TestClient(app)
        log_lines()
        r = c.get("/items/1")
        assert len(r.headers.get_list("x-request-id")) == 1
        assert len([line for line in log_lines() if line["event"] == "request"]) == 1

    def test_wrap_any_asgi_app(self, log_lines: LogReader) -> None:
        """wrap() serves a plain ASGI app, adds IDs, sends a 500 with the ID when the app fails."""

        async def raw(scope: Any, receive: Any, send: Any) -> None:
            if scope["path"] == "/fail":
                raise ValueError("raw failure")
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"raw"})

        wrapped = opskit.wrap(raw)
        assert opskit.wrap(wrapped) is wrapped
        assert isinstance(wrapped, OpskitMiddleware)
        c = TestClient(wrapped, raise_server_exceptions=False)
        r = c.get("/x", headers={"X-Request-ID": "raw-1"})
        assert r.text == "raw" and r.headers["x-request-id"] == "raw-1"
        r = c.get("/fail", headers={"X-Request-ID": "raw-2"})
        assert r.status_code == 500 and r.headers["x-request-id"] == "raw-2"
        lines = log_lines()
        assert [line["route"] for line in lines if line["event"] == "request"] == ["__unmatched__", "__unmatched__"]

    def test_instrument_rejects_non_starlette(self) -> None:
        """instrument() points to wrap() for other ASGI apps."""
        with pytest.raises(TypeError, match="wrap"):
            opskit.instrument(object())

    def test_bad_setting_fails_at_instrument(self) -> None:
        """A bad override fails at import time, naming the variable."""
        with pytest.raises(opskit.ConfigError, match="OPSKIT_LOG_FORMAT"):
            opskit.instrument(FastAPI(), log_format="xml")


class Broken(Component):
    """A feature whose every per-request hook raises."""

    def request_started(self, ex: Exchange) -> None:
        raise RuntimeError("request_started broke")

    async def admit(self, ex: Exchange) -> None:
        raise RuntimeError("admit broke")

    def response_started(self, ex: Exchange) -> None:
        raise RuntimeError("response_started broke")

    def request_finished(self, ex: Exchange) -> None:
        raise RuntimeError("request_finished broke")

    def request_closed(self, ex: Exchange) -> None:
        raise RuntimeError("request_closed broke")

    def websocket_started(self, ex: Exchange) -> None:
        raise RuntimeError("websocket_started broke")

    def websocket_closed(self, ex: Exchange) -> None:
        raise RuntimeError("websocket_closed broke")

    async def startup(self) -> None:
        raise RuntimeError("startup broke")


def _errors(registry: Registry) -> dict[tuple[str, ...], float]:
    return {
        s.labels: s.data.values[0]
        for metric, series in registry.collect()
        if metric.name == "opskit_component_errors_total"
        for s in series
    }


class TestErrorPolicy:
    def test_a_failing_hook_never_breaks_the_response(self, log_lines: LogReader) -> None:
        """Every hook of a broken feature raises: responses are the app's, each failure is counted,
        the log speaks once per hook however many requests fail."""
        app = full.create(instrumented=False)
        runtime = Runtime(opskit.load_settings(), app)
        opskit.configure_logging(runtime.settings)
        registry = Registry(None)
        runtime._registry = registry
        ids = RequestIdComponent(runtime)
        middleware = OpskitMiddleware(app, runtime, [ids, Broken()])
        with TestClient(middleware) as c:
            for _ in range(3):
                r = c.get("/items/1", headers={"X-Request-ID": "kept-1"})
                assert r.status_code == 200 and r.headers["x-request-id"] == "kept-1"
            with c.websocket_connect("/ws") as ws:
                ws.send_text("hi")
                ws.receive_text()
        hooks = ("request_started", "admit", "response_started", "request_finished", "request_closed")
        counted = _errors(registry)
        assert {labels: n for labels, n in counted.items() if labels[1] in hooks} == {
            ("Broken", hook): 3.0 for hook in hooks
        }
        assert counted[("Broken", "websocket_started")] == counted[("Broken", "websocket_closed")] == 1.0
        assert counted[("Broken", "startup")] == 1.0
        failures = [line for line in log_lines() if line["event"] == "opskit component failed"]
        assert sorted(line["hook"] for line in failures) == sorted(
            [*hooks, "websocket_started", "websocket_closed", "startup"]
        )

    def test_refused_ids_are_logged_at_a_bounded_rate(self, log_lines: LogReader) -> None:
        """A storm of hostile request IDs writes one warning per reason per interval, counting the rest."""
        c = client()
        for _ in range(50):
            assert c.get("/items/1", headers={"X-Request-ID": "bad id!"}).status_code == 200
        warnings = [line for line in log_lines() if line["event"] == "invalid request id replaced"]
        assert len(warnings) == 1 and warnings[0]["suppressed"] == 0


class TestHandBuiltScopes:
    @pytest.mark.parametrize("app_kind", ["starlette", "raw"])
    def test_a_scope_the_app_accepts_opskit_accepts(self, app_kind: str, capsys: pytest.CaptureFixture[str]) -> None:
        """An HTTP scope without headers, client, query_string or root_path (as test harnesses build
        them) is served by every feature as the bare app serves it."""
        from starlette.applications import Starlette
        from starlette.responses import PlainTextResponse
        from starlette.routing import Route

        async def raw(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        def hello(request: Any) -> PlainTextResponse:
            return PlainTextResponse("ok")

        bare = raw if app_kind == "raw" else Starlette(routes=[Route("/", hello)])
        wrapped = opskit.wrap(
            bare, rate_limit="100/minute", traces_exporter="console", trusted_proxies="10.0.0.0/8", log_level="debug"
        )

        async def call(app: Any) -> list[dict[str, Any]]:
            sent: list[dict[str, Any]] = []

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            await app({"type": "http", "method": "GET", "path": "/", "http_version": "1.1"}, receive, send)
            return sent

        import asyncio

        plain = asyncio.run(call(bare))
        try:
            instrumented = asyncio.run(call(wrapped))
        finally:
            opskit.tracing.shutdown()  # the console exporter writes while stdout is still captured
        assert [m["type"] for m in instrumented] == [m["type"] for m in plain]
        assert instrumented[0]["status"] == plain[0]["status"] == 200
        assert instrumented[-1]["body"] == plain[-1]["body"] == b"ok"
        # ... and every feature did its work, none degraded
        assert any(name == b"x-request-id" for name, _ in instrumented[0]["headers"])
        out = capsys.readouterr().out
        assert "SpanKind.SERVER" in out  # the console exporter's span
        assert "failed" not in out
        assert '"status":200' in out.replace(" ", "")  # the access line
