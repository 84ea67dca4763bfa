"""``opskit.annotate()``: the app's own fields on the access line, the span, later log lines and metrics."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import structlog
from fastapi import FastAPI

import opskit
from opskit.fields import MAX_FIELD, MAX_FIELDS, REDACTED, FieldPolicy
from tests.conftest import LogReader
from tests.metrics.parsing import parse_text
from tests.serving.processes import opskit_serve
from tests.tracing.receiver import OtlpReceiver, otlp_receiver

APP = "tests.apps.annotated:app"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as r:
        yield r


def samples(metrics: str, name: str, route: str | None = None) -> list[tuple[dict[str, str], float]]:
    """The samples of ``name`` (of ``route`` only, if given): labels and value."""
    found = [(s.labels, s.value) for f in parse_text(metrics) for s in f.samples if s.name == name]
    return [(labels, value) for labels, value in found if route is None or labels.get("route") == route]


def serve(env: dict[str, str], requests: Any) -> tuple[list[dict[str, Any]], str]:
    """One worker of ``opskit serve`` of the annotated app; ``requests(client)`` runs against it.

    Returns the JSON lines the server wrote and a scrape of /metrics taken after the requests.
    """
    base = {"WEB_CONCURRENCY": "1", "OTEL_BSP_SCHEDULE_DELAY": "50"}
    with opskit_serve(APP, {**base, **env}) as (process, port):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            requests(client)
            metrics = client.get("/metrics").text
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, process.stderr()
        return lines_of(process.stdout()), metrics


def lines_of(text: str) -> list[dict[str, Any]]:
    """Every line (split at newlines only, as a log shipper does) parsed as one JSON object."""
    return [json.loads(line) for line in text.split("\n") if line]


def access(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("logger") == "opskit.access"]


@pytest.mark.slow
class TestServed:
    def test_a_dependency_annotation_reaches_access_line_span_later_lines_and_metrics(
        self, receiver: OtlpReceiver
    ) -> None:
        """tenant="acme" from a sync dependency: on the access line, the span at a real OTLP receiver, the
        route's own later log line, and /metrics with the label enabled."""
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OPSKIT_METRICS_LABELS": "tenant,plan"}
        lines, metrics = serve(env, lambda c: c.get("/items/7", headers={"X-Tenant": "acme"}).raise_for_status())

        (line,) = [a for a in access(lines) if a["path"] == "/items/7"]
        assert (line["tenant"], line["plan"], line["layer"]) == ("acme", "pro", "inner-middleware")
        (handled,) = [x for x in lines if x.get("event") == "handled"]
        assert (handled["tenant"], handled["plan"], handled["request_id"]) == ("acme", "pro", line["request_id"])

        (span,) = [s for s in receiver.wait_for(1) if s.attributes.get("http.route") == "/items/{item_id}"]
        assert span.attributes["tenant"] == "acme"
        assert span.attributes["plan"] == "pro"
        assert span.trace_id == line["trace_id"]

        found = [labels for labels, _ in samples(metrics, "http_requests_total", "/items/{item_id}")]
        expected = {"method": "GET", "route": "/items/{item_id}", "status": "200", "tenant": "acme", "plan": "pro"}
        assert found == [expected]

    def test_a_background_task_annotates_its_span_and_its_own_lines(self, receiver: OtlpReceiver) -> None:
        """A BackgroundTask's field reaches the span (ended after it) and its later log line, not the
        access line already written."""
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
        lines, _ = serve(env, lambda c: c.get("/background/3").raise_for_status())
        (done,) = [x for x in lines if x.get("event") == "background done"]
        assert done["job"] == "job-3"
        (line,) = [a for a in access(lines) if a["path"] == "/background/3"]
        assert "job" not in line
        (span,) = [s for s in receiver.wait_for(1) if s.attributes.get("http.route") == "/background/{n}"]
        assert span.attributes["job"] == "job-3"

    def test_one_thousand_tenants_with_a_cap_of_100_make_101_label_values(self) -> None:
        """Past the cap, new values count as __other__, and the overflow counter says how many requests."""
        env = {"OPSKIT_METRICS_LABELS": "tenant,header:X-Client-Version", "OPSKIT_METRICS_LABEL_LIMIT": "100"}

        def load(client: httpx.Client) -> None:
            for n in range(1000):
                client.get("/items/1", headers={"X-Tenant": f"t{n}", "X-Client-Version": "2.1"}).raise_for_status()

        _, metrics = serve(env, load)
        rows = [labels for labels, _ in samples(metrics, "http_requests_total", "/items/{item_id}")]
        tenants = {labels["tenant"] for labels in rows}
        assert len(tenants) == 101
        assert "__other__" in tenants
        assert {labels["x_client_version"] for labels in rows} == {"2.1"}
        counts = {labels["tenant"]: n for labels, n in samples(metrics, "http_requests_total", "/items/{item_id}")}
        assert counts["__other__"] == 900
        overflow = {labels["label"]: value for labels, value in samples(metrics, "opskit_metrics_label_overflow_total")}
        assert overflow == {"tenant": 900.0, "x_client_version": 0.0}

    def test_without_extra_labels_the_series_keep_their_shape(self) -> None:
        """No OPSKIT_METRICS_LABELS: the request metrics have exactly the labels the dashboards query."""
        _, metrics = serve({}, lambda c: c.get("/items/1", headers={"X-Tenant": "acme"}).raise_for_status())
        rows = [labels for labels, _ in samples(metrics, "http_requests_total")]
        assert rows and all(set(labels) == {"method", "route", "status"} for labels in rows)
        assert not samples(metrics, "opskit_metrics_label_overflow_total")

    def test_hostile_values_break_no_line_and_stay_bounded(self, receiver: OtlpReceiver) -> None:
        """Newlines, quotes and a value 50 times over: every line is one JSON object, every field bounded, a
        sensitive key redacted, opskit's own keys unchanged."""
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OPSKIT_METRICS_LABELS": "note"}
        value = 'a"b\\c\n\r\u2028\x00{"x":1}\u00e9' + "z" * 100
        lines, metrics = serve(env, lambda c: c.get("/hostile", params={"value": value}).raise_for_status())
        (line,) = [a for a in access(lines) if a["path"] == "/hostile"]
        assert line["note"] == (value * 50)[:MAX_FIELD]
        assert line["password"] == REDACTED
        assert line["status"] == 200
        assert line["shape"].startswith("<object object")
        (later,) = [x for x in lines if x.get("event") == "hostile handled"]
        assert later["password"] == REDACTED
        (span,) = [s for s in receiver.wait_for(1) if s.attributes.get("http.route") == "/hostile"]
        assert len(span.attributes["note"]) == MAX_FIELD
        assert span.attributes["password"] == REDACTED
        assert span.attributes["http.response.status_code"] == 200
        (labels,) = [labels for labels, _ in samples(metrics, "http_requests_total", "/hostile")]
        assert labels["note"] == (value * 50)[:128]


class TestAnnotate:
    def test_outside_a_request_the_fields_are_bound_to_the_context(self) -> None:
        """No request: the fields go to structlog's context variables, cleaned like a request's."""
        structlog.contextvars.clear_contextvars()
        try:
            opskit.annotate(job="nightly", token="s3cret")
            assert structlog.contextvars.get_contextvars() == {"job": "nightly", "token": REDACTED}
        finally:
            structlog.contextvars.clear_contextvars()

    def test_the_policy_bounds_keys_values_and_their_number(self) -> None:
        """Long keys are cut, non-primitives become text, reserved keys are skipped, a request keeps 64 fields."""
        policy = FieldPolicy(["Secret"], reserved=["status"])
        target: dict[str, Any] = {}
        policy.merge(target, {"k" * 500: 1, "status": "x", "SECRET": "v", "n": None, "f": 1.5, "l": [1, 2]})
        assert target == {"k" * 128: 1, "SECRET": REDACTED, "n": None, "f": 1.5, "l": "[1, 2]"}
        policy.merge(target, {f"x{n}": n for n in range(100)})
        assert len(target) == MAX_FIELDS
        json.dumps(target)


class TestInProcess:
    @pytest.mark.anyio
    async def test_without_a_per_request_feature_later_lines_still_carry_the_fields(self, log_lines: LogReader) -> None:
        """Only request IDs and logging on (the middleware keeps no per-request record): the fields are bound
        to the context of the request's task, so its later lines carry them and the next request's do not."""
        app = FastAPI()
        log = opskit.get_logger("tests.lean")

        @app.get("/lean/{n}")
        async def lean(n: int) -> dict[str, int]:
            if n == 1:
                opskit.annotate(tenant="acme")
            log.info("lean handled", n=n)
            return {"n": n}

        off = {"metrics_enabled": False, "tracing_enabled": False, "ratelimit_enabled": False}
        opskit.instrument(app, access_log_enabled=False, runtime_enabled=False, **off)
        log_lines()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            for n in (1, 2):  # each request in its own task, as ASGI servers run them
                (await asyncio.create_task(client.get(f"/lean/{n}"))).raise_for_status()
        handled = {line["n"]: line for line in log_lines() if line.get("event") == "lean handled"}
        assert handled[1]["tenant"] == "acme"
        assert "tenant" not in handled[2]
