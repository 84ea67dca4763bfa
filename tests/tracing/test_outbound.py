"""Outgoing httpx and redis calls as CLIENT spans under the request's span (OPSKIT_TRACING_OUTBOUND)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from starlette.testclient import TestClient

import opskit.tracing
from tests.servers import RedisServer
from tests.tracing.app import create
from tests.tracing.receiver import OtlpReceiver

CLIENT = 3  # SpanKind.SPAN_KIND_CLIENT in OTLP


@pytest.fixture
def uninstrument() -> Iterator[None]:
    yield
    for instrumentor in (HTTPXClientInstrumentor(), RedisInstrumentor()):
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()


class TestOutbound:
    def test_httpx_and_redis_calls_are_child_spans(
        self, receiver: OtlpReceiver, redis: RedisServer, uninstrument: None
    ) -> None:
        """With the setting on, each outgoing call is a CLIENT span in the request's trace."""
        with TestClient(create(otlp_endpoint=receiver.endpoint, tracing_outbound=True)) as c:
            r = c.get("/outbound", params={"http_port": receiver.port, "redis_url": redis.url})
            assert r.status_code == 200
        spans = receiver.spans()
        [server] = [s for s in spans if s.name == "GET /outbound"]
        clients = [s for s in spans if s.kind == CLIENT]
        assert sorted(s.name for s in clients) == ["GET", "PING"]
        assert all((s.trace_id, s.parent_span_id) == (server.trace_id, server.span_id) for s in clients)

    def test_off_by_default(self, receiver: OtlpReceiver, redis: RedisServer, uninstrument: None) -> None:
        """Without the setting, outgoing calls add no span."""
        c = TestClient(create(otlp_endpoint=receiver.endpoint))
        assert c.get("/outbound", params={"http_port": receiver.port, "redis_url": redis.url}).status_code == 200
        opskit.tracing.shutdown()
        assert [s.name for s in receiver.spans()] == ["GET /outbound"]
