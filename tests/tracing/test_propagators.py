"""OTEL_PROPAGATORS: which formats continue an incoming trace and which an outgoing call carries."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from starlette.testclient import TestClient

import opskit.tracing
from opskit.settings import ConfigError, load_settings
from opskit.tracing import lifecycle
from opskit.tracing.propagation import ForeignExtractor
from tests.conftest import LogReader
from tests.tracing.app import create
from tests.tracing.receiver import OtlpReceiver, ReceivedSpan

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
B3_TRACE = "80f198ee56343ba864fe8b2a57d3eff7"
B3_SPAN = "e457b5a2e4d86bd1"
TRACEPARENT = {"traceparent": f"00-{TRACE}-{SPAN}-01"}
B3_SINGLE = {"b3": f"{B3_TRACE}-{B3_SPAN}-1"}
B3_MULTI = {"X-B3-TraceId": B3_TRACE, "X-B3-SpanId": B3_SPAN, "X-B3-Sampled": "1"}
BAGGAGE = {"baggage": "user=alice"}


def served(receiver: OtlpReceiver, propagators: str, headers: dict[str, str], path: str = "/items/1") -> ReceivedSpan:
    """Serve one request with ``headers`` under ``OTEL_PROPAGATORS=propagators``; its exported server span."""
    c = TestClient(create(otlp_endpoint=receiver.endpoint, propagators=propagators))
    assert c.get(path, headers=headers).status_code == 200
    opskit.tracing.shutdown()
    [span] = [s for s in receiver.spans() if s.kind == 2]
    return span


def parent_of(span: ReceivedSpan) -> tuple[str, str]:
    return span.trace_id, span.parent_span_id


class TestSettings:
    """The variable is read, normalised and checked at startup."""

    def test_default_is_tracecontext_and_baggage(self) -> None:
        """Unset (or empty), the standard default applies."""
        assert load_settings().propagators == ("tracecontext", "baggage")
        assert load_settings(propagators="").propagators == ("tracecontext", "baggage")

    def test_list_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A comma list, case and spaces forgiven, duplicates dropped, order kept."""
        monkeypatch.setenv("OTEL_PROPAGATORS", " B3multi, tracecontext ,b3multi")
        assert load_settings().propagators == ("b3multi", "tracecontext")

    def test_none_anywhere_means_none(self) -> None:
        """As in the OpenTelemetry SDK, `none` switches propagation off whatever else is listed."""
        assert load_settings(propagators="tracecontext,none").propagators == ("none",)

    @pytest.mark.parametrize("value", ["jaeger", "tracecontext,bogus", "b3\nx", "x" * 300])
    def test_unknown_or_uninstalled_fails_at_startup(self, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
        """A name that is no installed propagator stops startup with an error naming OTEL_PROPAGATORS."""
        monkeypatch.setenv("OTEL_PROPAGATORS", value)
        with pytest.raises(ConfigError, match="OTEL_PROPAGATORS"):
            load_settings()


class TestExtraction:
    """Incoming context follows the configured propagators only."""

    @pytest.mark.parametrize(
        ("propagators", "headers", "parent"),
        [
            ("tracecontext,baggage", {**TRACEPARENT, **B3_SINGLE}, (TRACE, SPAN)),
            ("tracecontext", B3_MULTI, None),
            ("b3", B3_SINGLE, (B3_TRACE, B3_SPAN)),
            ("b3", B3_MULTI, (B3_TRACE, B3_SPAN)),  # the b3 propagators read both forms
            ("b3multi", B3_MULTI, (B3_TRACE, B3_SPAN)),
            ("b3multi", TRACEPARENT, None),
            ("b3,tracecontext", {**TRACEPARENT, **B3_SINGLE}, (TRACE, SPAN)),  # the later one wins
            ("tracecontext,b3", {**TRACEPARENT, **B3_SINGLE}, (B3_TRACE, B3_SPAN)),
            ("tracecontext,b3", TRACEPARENT, (TRACE, SPAN)),
            ("none", {**TRACEPARENT, **B3_SINGLE, **B3_MULTI}, None),
        ],
    )
    def test_parent(
        self, receiver: OtlpReceiver, propagators: str, headers: dict[str, str], parent: tuple[str, str] | None
    ) -> None:
        """The server span continues the trace the configured formats carry, and no other."""
        span = served(receiver, propagators, headers)
        if parent is None:
            assert span.parent_span_id == "" and span.trace_id not in (TRACE, B3_TRACE)
        else:
            assert parent_of(span) == parent

    @pytest.mark.parametrize(("propagators", "members"), [("baggage", {"user": "alice"}), ("tracecontext,b3", {})])
    def test_baggage_only_when_listed(self, receiver: OtlpReceiver, propagators: str, members: dict[str, str]) -> None:
        """W3C baggage reaches user code only when `baggage` is listed."""
        c = TestClient(create(otlp_endpoint=receiver.endpoint, propagators=propagators))
        assert c.get("/baggage", headers=BAGGAGE).json() == members

    @pytest.mark.parametrize(
        "headers",
        [
            {"b3": f"{B3_TRACE}-{B3_SPAN}-1" + "-" + "a" * 300},  # too long
            {"b3": f"{B3_TRACE}-{B3_SPAN}-1\r\nX-Evil: 1"},
            {"b3": f"{B3_TRACE} -{B3_SPAN}-1"},
            {"b3": "-----"},
            {"b3": f"{'0' * 32}-{B3_SPAN}-1"},
            {"b3": f"{B3_TRACE}-{'0' * 16}-1"},
            {"b3": f"{B3_TRACE[:-1]}z-{B3_SPAN}-1"},
            {"b3": f"{B3_TRACE}{B3_TRACE}-{B3_SPAN}-1"},
            {"b3": "1"},
            {"X-B3-TraceId": B3_TRACE, "X-B3-SpanId": B3_SPAN + "\t"},
            {"X-B3-TraceId": B3_TRACE},
            {"X-B3-TraceId": "é" * 16, "X-B3-SpanId": B3_SPAN},
        ],
        ids=lambda h: repr(h)[:40],
    )
    def test_malformed_b3_starts_a_fresh_trace_silently(
        self, receiver: OtlpReceiver, log_lines: LogReader, headers: dict[str, str]
    ) -> None:
        """A bad b3 header is ignored: the request is served, a fresh trace starts, no log line has it or splits."""
        encoded = [(k.lower().encode(), v.encode("utf-8")) for k, v in headers.items()]
        c = TestClient(create(otlp_endpoint=receiver.endpoint, propagators="b3"))
        r = c.get("/items/1", headers=encoded)
        assert r.status_code == 200
        opskit.tracing.shutdown()
        [span] = receiver.spans()
        assert span.parent_span_id == "" and span.trace_id != B3_TRACE
        written = repr(log_lines())  # every line written is one JSON object, or this fails
        assert "X-Evil" not in written and "aaaa" not in written

    def test_a_raising_propagator_is_no_context(self) -> None:
        """An exception inside a propagator gives no parent, never a failed request."""
        extractor = ForeignExtractor(("b3",))

        class Raising:
            def extract(self, carrier: Any, context: Any) -> Any:
                raise RuntimeError("bad")

        extractor._steps = [Raising()]  # type: ignore[list-item]
        assert extractor.extract([(b"b3", f"{B3_TRACE}-{B3_SPAN}-1".encode())], None) is None


@pytest.fixture
def uninstrument() -> Iterator[None]:
    yield
    instrumentor = HTTPXClientInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


def injected(propagators: str) -> dict[str, str]:
    """The headers the global propagator writes for a sampled span, once this worker's pipeline exists."""
    lifecycle.start(load_settings(traces_exporter="console", propagators=propagators))
    span = NonRecordingSpan(SpanContext(int(TRACE, 16), int(SPAN, 16), False, TraceFlags(TraceFlags.SAMPLED)))
    carrier: dict[str, str] = {}
    propagate.inject(carrier, trace.set_span_in_context(span, Context()))
    return carrier


class TestInjection:
    """Outgoing calls carry the configured formats."""

    @pytest.mark.parametrize(
        ("propagators", "headers"),
        [
            ("tracecontext,baggage", {"traceparent": f"00-{TRACE}-{SPAN}-01"}),
            ("tracecontext", {"traceparent": f"00-{TRACE}-{SPAN}-01"}),
            ("baggage", {}),
            ("b3", {"b3": f"{TRACE}-{SPAN}-1"}),
            ("b3multi", {"x-b3-traceid": TRACE, "x-b3-spanid": SPAN, "x-b3-sampled": "1"}),
            ("b3,tracecontext", {"b3": f"{TRACE}-{SPAN}-1", "traceparent": f"00-{TRACE}-{SPAN}-01"}),
            ("none", {}),
        ],
    )
    def test_global_propagator(self, propagators: str, headers: dict[str, str]) -> None:
        """inject() (what httpx, redis and user code call) writes exactly the configured headers."""
        assert injected(propagators) == headers

    @pytest.mark.parametrize(
        ("propagators", "present", "absent"),
        [("b3multi", "x-b3-traceid", "traceparent"), ("tracecontext", "traceparent", "x-b3-traceid")],
    )
    def test_httpx_call_carries_the_configured_format(
        self, receiver: OtlpReceiver, uninstrument: None, propagators: str, present: str, absent: str
    ) -> None:
        """An httpx call from an endpoint, traced as a CLIENT span, sends the request's trace in the set format."""
        app = create(otlp_endpoint=receiver.endpoint, tracing_outbound=True, propagators=propagators)
        with TestClient(app) as c:
            assert c.get("/call", params={"port": receiver.port}).json() == {"status": 200}
        [echo] = receiver.gets
        assert present in echo and absent not in echo
        [server] = [s for s in receiver.spans() if s.kind == 2]
        assert server.trace_id in echo[present]
