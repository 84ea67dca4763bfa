"""Websocket connections get a server span, lasting as long as the connection."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

import opskit.tracing
from tests.conftest import LogReader
from tests.tracing.app import create
from tests.tracing.receiver import OtlpReceiver

SERVER = 2
PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


class TestWebsocketSpan:
    """One SERVER span per websocket connection, named after the route."""

    def test_accepted_connection(self, receiver: OtlpReceiver, log_lines: LogReader) -> None:
        """The span is current in the handler, named after the route, status 101, in the access log line."""
        c = TestClient(create(otlp_endpoint=receiver.endpoint))
        with c.websocket_connect("/ws/lobby") as ws:
            seen = ws.receive_json()
            ws.send_text("bye")
        opskit.tracing.shutdown()
        [span] = receiver.spans()
        assert span.kind == SERVER
        assert span.name == "GET /ws/{room}"
        assert span.trace_id == seen["trace_id"]
        assert span.attributes["http.route"] == "/ws/{room}"
        assert span.attributes["url.path"] == "/ws/lobby"
        assert span.attributes["url.scheme"] == "ws"
        assert span.attributes["http.response.status_code"] == 101
        assert span.end_ns > span.start_ns
        [line] = [line for line in log_lines() if line.get("event") == "websocket"]
        assert line["trace_id"] == span.trace_id  # the connection's log line correlates

    def test_continues_the_callers_trace(self, receiver: OtlpReceiver) -> None:
        """A traceparent on the upgrade request makes the span its child."""
        c = TestClient(create(otlp_endpoint=receiver.endpoint))
        headers = {"traceparent": f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"}
        with c.websocket_connect("/ws/lobby", headers=headers) as ws:
            ws.receive_json()
            ws.send_text("bye")
        opskit.tracing.shutdown()
        [span] = receiver.spans()
        assert (span.trace_id, span.parent_span_id) == (PARENT_TRACE, PARENT_SPAN)

    def test_refused_connection(self, receiver: OtlpReceiver) -> None:
        """A connection the app closes before accepting is a span with status 403, not an error."""
        c = TestClient(create(otlp_endpoint=receiver.endpoint))
        with pytest.raises(WebSocketDisconnect), c.websocket_connect("/ws/closed"):
            pass
        opskit.tracing.shutdown()
        [span] = receiver.spans()
        assert span.attributes["http.response.status_code"] == 403
        assert not span.is_error

    def test_http_requests_unchanged(self, receiver: OtlpReceiver) -> None:
        """A websocket in between leaves the next HTTP request's span and context as before."""
        c = TestClient(create(otlp_endpoint=receiver.endpoint))
        with c.websocket_connect("/ws/lobby") as ws:
            ws.receive_json()
            ws.send_text("bye")
        assert c.get("/items/1").status_code == 200
        opskit.tracing.shutdown()
        assert sorted(span.name for span in receiver.spans()) == ["GET /items/{item_id}", "GET /ws/{room}"]
        assert len({span.trace_id for span in receiver.spans()}) == 2
