"""Server spans through opskit.instrument, exported over real OTLP/HTTP and decoded with opentelemetry-proto."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import httpx
import pytest
from opentelemetry import trace
from starlette.testclient import TestClient

import opskit.tracing
from opskit.instrument import build_components
from opskit.runtime import Runtime
from opskit.settings import load_settings
from opskit.tracing import TracingComponent, lifecycle
from tests.conftest import LogReader
from tests.tracing.app import create
from tests.tracing.receiver import OtlpReceiver, ReceivedSpan

SERVER = 2  # SpanKind.SPAN_KIND_SERVER in OTLP
INTERNAL = 1
PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


def client(receiver: OtlpReceiver, **overrides: Any) -> TestClient:
    return TestClient(create(otlp_endpoint=receiver.endpoint, **overrides), raise_server_exceptions=False)


def exported(receiver: OtlpReceiver) -> list[ReceivedSpan]:
    """Flush the pipeline (synchronously) and return what the receiver decoded."""
    opskit.tracing.shutdown()
    return receiver.spans()


class TestServerSpan:
    def test_one_span_with_semantic_convention_attributes(self, receiver: OtlpReceiver) -> None:
        """A request gives exactly one SERVER span named after the route, with the stable HTTP attributes."""
        c = client(receiver, service_name="shop", service_version="1.2.3", environment="prod")
        r = c.get("/items/7", headers={"User-Agent": "probe/1.0", "X-Request-ID": "rid-7"})
        assert r.status_code == 200
        [span] = exported(receiver)
        assert span.name == "GET /items/{item_id}"
        assert span.kind == SERVER
        assert span.parent_span_id == ""
        assert span.attributes == {
            "http.request.method": "GET",
            "http.route": "/items/{item_id}",
            "url.path": "/items/7",
            "url.scheme": "http",
            "network.protocol.version": "1.1",
            "server.address": "testserver",
            "http.response.status_code": 200,
            "client.address": "testclient",
            "user_agent.original": "probe/1.0",
            "request_id": "rid-7",
        }
        assert span.status_code == 0  # UNSET
        assert span.end_ns > span.start_ns
        assert span.resource["service.name"] == "shop"
        assert span.resource["service.version"] == "1.2.3"
        assert span.resource["deployment.environment"] == "prod"
        assert (span.trace_id, span.span_id) == (r.json()["trace_id"], r.json()["span_id"])

    def test_fastapi_native_spans_are_switched_off(self, receiver: OtlpReceiver) -> None:
        """Once opskit's provider is global, FastAPI's own telemetry does not trace requests a second time."""
        c = client(receiver)
        for i in range(3):
            c.get(f"/items/{i}")
        spans = exported(receiver)
        assert [(s.name, s.kind) for s in spans] == [("GET /items/{item_id}", SERVER)] * 3

    def test_route_is_known_without_other_features(self, receiver: OtlpReceiver) -> None:
        """With request IDs and logging off, tracing alone still names the span after the route."""
        client(receiver, logging_enabled=False, request_id_enabled=False).get("/items/2")
        [span] = exported(receiver)
        assert (span.name, span.attributes["http.route"]) == ("GET /items/{item_id}", "/items/{item_id}")
        assert "request_id" not in span.attributes

    def test_traceparent_continues_the_trace(self, receiver: OtlpReceiver) -> None:
        """A valid traceparent makes the span a child of the caller's span, in the caller's trace."""
        c = client(receiver)
        c.get(
            "/items/1",
            headers={"traceparent": f"00-{PARENT_TRACE}-{PARENT_SPAN}-01", "tracestate": "vendor=opaque,b=2"},
        )
        [span] = exported(receiver)
        assert span.trace_id == PARENT_TRACE
        assert span.parent_span_id == PARENT_SPAN
        assert span.span_id != PARENT_SPAN
        assert span.trace_state == "vendor=opaque,b=2"

    def test_unsampled_parent_is_respected(self, receiver: OtlpReceiver) -> None:
        """With the default parent-based sampler a caller's 'not sampled' decision exports nothing."""
        r = client(receiver).get("/items/1", headers={"traceparent": f"00-{PARENT_TRACE}-{PARENT_SPAN}-00"})
        assert r.status_code == 200
        assert r.json()["trace_id"] == PARENT_TRACE  # still propagated to user code and outbound calls
        assert exported(receiver) == []

    def test_excluded_paths_export_nothing(self, receiver: OtlpReceiver) -> None:
        """Health endpoints and OTEL_PYTHON_EXCLUDED_URLS patterns get no span; other paths do."""
        c = client(receiver, tracing_excluded_urls="^/static/,/never")
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 200
        assert c.get("/static/logo.png").status_code == 200
        assert c.get("/items/3").status_code == 200
        assert [span.attributes["url.path"] for span in exported(receiver)] == ["/items/3"]

    def test_unhandled_exception_marks_the_span_error(self, receiver: OtlpReceiver) -> None:
        """A 500 from an exception sets status ERROR, error.type and an exception event."""
        assert client(receiver).get("/boom").status_code == 500
        [span] = exported(receiver)
        assert span.name == "GET /boom"
        assert span.is_error
        assert span.attributes["http.response.status_code"] == 500
        assert span.attributes["error.type"] == "builtins.RuntimeError"
        [(event, attributes)] = span.events
        assert event == "exception"
        assert attributes["exception.type"] == "RuntimeError"
        assert attributes["exception.message"] == "kaput"
        assert "raise RuntimeError" in attributes["exception.stacktrace"]

    def test_client_errors_are_not_span_errors(self, receiver: OtlpReceiver) -> None:
        """A 404 or 422 is the client's fault: status stays UNSET (semantic conventions for servers)."""
        c = client(receiver)
        assert c.get("/items/not-a-number").status_code == 422
        assert c.get("/nowhere").status_code == 404
        spans = exported(receiver)
        assert [s.status_code for s in spans] == [0, 0]
        assert spans[1].name == "GET"  # unmatched: no route, no raw path in the name
        assert "http.route" not in spans[1].attributes

    @pytest.mark.parametrize(
        "hostile",
        [
            f"00-{PARENT_TRACE}-{PARENT_SPAN}-01" + "-x" * 100,
            f"00-{PARENT_TRACE.upper()}-{PARENT_SPAN}-01",
            f"00-{'g' * 32}-{PARENT_SPAN}-01",
            f"00-{'0' * 32}-{PARENT_SPAN}-01",
            f"00-{PARENT_TRACE}-{'0' * 16}-01",
            f"ff-{PARENT_TRACE}-{PARENT_SPAN}-01",
            f"00-{PARENT_TRACE}-{PARENT_SPAN}-01\r\nx-evil: 1",
            f"00-{PARENT_TRACE}-{PARENT_SPAN}-01-extra",
            f"00_{PARENT_TRACE}_{PARENT_SPAN}_01",
            "",
        ],
        ids=["too-long", "upper-hex", "bad-hex", "zero-trace", "zero-span", "version-ff", "newline", "v00-extra",
             "separators", "empty"],
    )  # fmt: skip
    def test_hostile_traceparent_starts_a_fresh_trace(self, receiver: OtlpReceiver, hostile: str) -> None:
        """An invalid traceparent is ignored: the request succeeds and starts a new root span."""
        r = client(receiver).get("/items/1", headers=[(b"traceparent", hostile.encode("latin-1"))])
        assert r.status_code == 200
        [span] = exported(receiver)
        assert span.trace_id != PARENT_TRACE
        assert span.parent_span_id == ""

    def test_user_spans_are_children_of_the_server_span(self, receiver: OtlpReceiver) -> None:
        """Spans started in an endpoint nest under the request span; attributes set on it are kept."""
        client(receiver).get("/child")
        spans = {span.name: span for span in exported(receiver)}
        server, child = spans["GET /child"], spans["child work"]
        assert child.kind == INTERNAL
        assert (child.trace_id, child.parent_span_id) == (server.trace_id, server.span_id)
        assert child.attributes == {"work.size": 3}
        assert server.attributes["app.user"] == "u-1"


class TestCorrelation:
    def test_log_lines_in_endpoint_and_background_task_carry_the_trace(
        self, receiver: OtlpReceiver, log_lines: LogReader
    ) -> None:
        """trace_id/span_id on the endpoint's and the BackgroundTask's log lines are the exported span's."""
        c = client(receiver)
        log_lines()
        c.get("/items/5")
        [span] = exported(receiver)
        lines = {line["event"]: line for line in log_lines()}
        for event in ("in endpoint", "background work", "request"):
            assert (lines[event]["trace_id"], lines[event]["span_id"]) == (span.trace_id, span.span_id), event

    def test_context_is_restored_after_the_request(self, receiver: OtlpReceiver) -> None:
        """Once a request is over, its span is no longer current in the caller's context (same task)."""
        app = create(otlp_endpoint=receiver.endpoint)

        async def call() -> tuple[int, bool]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                status = (await c.get("/items/1")).status_code
            return status, trace.get_current_span().get_span_context().is_valid

        assert anyio.run(call) == (200, False)
        assert len(exported(receiver)) == 1

    @pytest.mark.parametrize("mode", ["traceresponse", "server-timing"])
    def test_response_header_quotes_the_trace(self, receiver: OtlpReceiver, mode: str) -> None:
        """OPSKIT_TRACING_RESPONSE_HEADER returns the span's trace context to the client."""
        r = client(receiver, tracing_response_header=mode).get("/items/1")
        [span] = exported(receiver)
        value = f"00-{span.trace_id}-{span.span_id}-01"
        if mode == "traceresponse":
            assert r.headers["traceresponse"] == value
        else:
            assert r.headers["server-timing"] == f'traceparent;desc="{value}"'

    def test_no_response_header_by_default(self, receiver: OtlpReceiver) -> None:
        """Without the setting, no trace header is added to responses."""
        r = client(receiver).get("/items/1")
        assert "traceresponse" not in r.headers and "server-timing" not in r.headers


class TestCost:
    def test_no_exporter_means_no_component(self) -> None:
        """Tracing on but nothing to export to: no tracing component is installed at all."""
        assert not [c for c in build_components(Runtime(load_settings())) if isinstance(c, TracingComponent)]
        assert not [
            c
            for c in build_components(Runtime(load_settings(traces_exporter="none")))
            if isinstance(c, TracingComponent)
        ]

    def test_disabled_means_no_component(self, receiver: OtlpReceiver) -> None:
        """OPSKIT_TRACING_ENABLED=false and OTEL_SDK_DISABLED=true switch tracing off despite an endpoint."""
        for off in ({"tracing_enabled": False}, {"otel_sdk_disabled": True}):
            settings = load_settings(otlp_endpoint=receiver.endpoint, **off)
            assert not [c for c in build_components(Runtime(settings)) if isinstance(c, TracingComponent)]

    def test_instrument_creates_no_thread(self, receiver: OtlpReceiver) -> None:
        """instrument() at import time (a preloading master) starts no export thread; a request does."""

        def exporters() -> list[str]:
            return [t.name for t in threading.enumerate() if t.name.startswith("OtelBatch")]

        before = exporters()
        c = client(receiver)
        assert exporters() == before
        c.get("/items/1")
        assert len(exporters()) == len(before) + 1
        opskit.tracing.shutdown()
        assert exporters() == before

    def test_init_worker_builds_from_the_environment(
        self, receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """In post_fork, before the app has started, init_worker builds the pipeline from OTEL_* variables."""
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
        opskit.tracing.init_worker()
        assert lifecycle.pipeline is not None
        assert lifecycle.pipeline.resource.attributes["service.name"] == "from-env"

    def test_lifespan_shutdown_flushes(self, receiver: OtlpReceiver) -> None:
        """Spans queued when the app shuts down (lifespan) are exported before it exits."""
        with client(receiver, bsp_schedule_delay_ms=60_000) as c:
            c.get("/items/1")
            c.get("/items/2")
            assert receiver.spans() == []  # still queued
        assert len(receiver.spans()) == 2


class TestReconcile:
    """A pipeline built before the app (init_worker in post_fork) yields to what the app says."""

    @pytest.fixture
    def started_from_env(self, receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
        opskit.tracing.init_worker()
        assert lifecycle.pipeline is not None

    @pytest.mark.usefixtures("started_from_env")
    def test_switched_off_by_the_app(self, receiver: OtlpReceiver, log_lines: LogReader) -> None:
        """instrument(app, tracing_enabled=False): the pipeline stops, user spans record nothing, one line says so."""
        tracer = trace.get_tracer("user.code")  # taken while the early pipeline was current
        with TestClient(create(tracing_enabled=False)) as c:
            assert lifecycle.pipeline is None
            assert c.get("/child").status_code == 200
            with tracer.start_as_current_span("after") as span:
                assert not span.is_recording()
        assert exported(receiver) == []
        said = [line for line in log_lines() if "switched off" in str(line.get("event"))]
        assert len(said) == 1

    @pytest.mark.usefixtures("started_from_env")
    def test_rebuilt_with_the_app_service_name(self, receiver: OtlpReceiver) -> None:
        """instrument(app, service_name=...): spans, user spans included, carry the app's name."""
        with TestClient(create(service_name="from-app")) as c:
            assert c.get("/child").status_code == 200
        spans = exported(receiver)
        assert {s.name for s in spans} == {"GET /child", "child work"}
        assert {s.resource["service.name"] for s in spans} == {"from-app"}

    def test_same_settings_keep_the_pipeline(self, receiver: OtlpReceiver) -> None:
        """The app's settings equal to the early ones: the running pipeline is kept."""
        settings = load_settings(otlp_endpoint=receiver.endpoint)
        opskit.tracing.init_worker(settings)
        early = lifecycle.pipeline
        with TestClient(create(otlp_endpoint=receiver.endpoint)) as c:
            c.get("/items/1")
            assert lifecycle.pipeline is early


def test_host_headers_parsed_once_and_bounded() -> None:
    """server.address/port come from the Host header; parsed names are remembered, but a client
    sending a new Host every time cannot grow that memory past its bound."""
    from opskit.tracing import component

    component._hosts.clear()
    for n in range(component._HOSTS_MAX * 3):
        host = f"h{n}.example:{8000 + n}".encode()
        assert component._server_address(host, {}) == (f"h{n}.example", 8000 + n)
        assert component._server_address(host, {}) == (f"h{n}.example", 8000 + n)
    assert len(component._hosts) == component._HOSTS_MAX
    assert component._server_address(b"[::1]:99999999", {}) == ("::1", None)
    assert component._server_address(b"bad\x01host", {"server": ("10.0.0.1", 80)}) == ("10.0.0.1", 80)
