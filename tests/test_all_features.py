"""Every feature on at once, as `instrument(app)` installs them: one request, one consistent story.

The request ID, the trace, the metrics and the rate limiter each have their own tests; this one
proves they agree with each other in the same request: the access-log line, the exported span
and the exemplar name the same request and trace, and a rejection is visible in all three.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import Depends, FastAPI
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from starlette.testclient import TestClient

import opskit
import opskit.tracing
from opskit.ratelimit.dependency import RateLimit
from tests.conftest import LogReader
from tests.tracing.conftest import _forget_global_provider
from tests.tracing.receiver import OtlpReceiver, otlp_receiver


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as r:
        try:
            yield r
        finally:
            opskit.tracing.shutdown()
            _forget_global_provider()


def create(receiver: OtlpReceiver) -> FastAPI:
    app = FastAPI()
    opskit.instrument(app, otlp_endpoint=receiver.endpoint, bsp_schedule_delay_ms=50, service_name="all-on")

    @app.get("/orders/{order_id}", dependencies=[Depends(RateLimit("2/minute burst=2", name="orders"))])
    async def order(order_id: int) -> dict[str, int]:
        opskit.get_logger("shop").info("order read", order_id=order_id)
        return {"order_id": order_id}

    return app


def test_log_span_metric_and_limit_tell_the_same_story(receiver: OtlpReceiver, log_lines: LogReader) -> None:
    """Access log, app log, span and exemplar share request and trace; the 429 shows everywhere."""
    c = TestClient(create(receiver))
    log_lines()
    assert c.get("/orders/1", headers={"X-Request-ID": "all-1"}).status_code == 200
    assert c.get("/orders/2", headers={"X-Request-ID": "all-2"}).status_code == 200
    limited = c.get("/orders/3", headers={"X-Request-ID": "all-3"})
    assert limited.status_code == 429 and limited.headers["x-request-id"] == "all-3"
    assert "retry-after" in limited.headers

    lines = log_lines()
    access = {line["request_id"]: line for line in lines if line["event"] == "request"}
    app_line = next(line for line in lines if line["event"] == "order read" and line["order_id"] == 1)
    assert app_line["request_id"] == "all-1"
    assert app_line["trace_id"] == access["all-1"]["trace_id"]
    assert access["all-1"]["route"] == "/orders/{order_id}"
    assert access["all-3"]["status"] == 429 and access["all-3"]["ratelimit_policy"] == "orders"

    spans = {s.attributes.get("request_id"): s for s in receiver.wait_for(3)}
    assert spans["all-1"].trace_id == access["all-1"]["trace_id"]
    assert spans["all-1"].name == "GET /orders/{order_id}"
    assert spans["all-3"].attributes["http.response.status_code"] == 429

    scrape = c.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    families = {f.name: f for f in text_string_to_metric_families(scrape.text)}  # type: ignore[no-untyped-call]
    requests = {
        s.labels["status"]: s
        for s in families["http_requests"].samples
        if s.name == "http_requests_total" and s.labels["route"] == "/orders/{order_id}"
    }
    assert requests["200"].value == 2 and requests["429"].value == 1
    exemplar_traces = {s.exemplar.labels["trace_id"] for s in requests.values() if s.exemplar}
    assert exemplar_traces <= {span.trace_id for span in spans.values()} and exemplar_traces
    decisions = {
        s.labels["decision"]: s.value
        for s in families["opskit_ratelimit_decisions"].samples
        if s.labels.get("policy") == "orders" and s.name.endswith("_total")
    }
    assert decisions == {"allowed": 2, "limited": 1}
