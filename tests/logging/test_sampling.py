"""Access-log sampling: errors and slow requests always logged, the rest at the configured share,
decided from the trace ID as the trace sampler decides."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.metrics.parsing import parse_text
from tests.serving.processes import opskit_serve
from tests.tracing.receiver import otlp_receiver

APP = "tests.apps.annotated:app"


def serve(env: dict[str, str], requests: Callable[[httpx.Client], None]) -> tuple[list[dict[str, Any]], str]:
    """One worker of ``opskit serve`` of the annotated app: the access lines it wrote and a scrape of /metrics."""
    with opskit_serve(APP, {"WEB_CONCURRENCY": "1", "OTEL_BSP_SCHEDULE_DELAY": "50", **env}) as (process, port):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            requests(client)
            metrics = client.get("/metrics").text
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, process.stderr()
        lines = [json.loads(line) for line in process.stdout().split("\n") if line]
    return [line for line in lines if line.get("logger") == "opskit.access"], metrics


def skipped(metrics: str) -> float:
    values = [s.value for f in parse_text(metrics) for s in f.samples if s.name == "opskit_access_log_skipped_total"]
    return values[0] if values else 0.0


def kind(n: int) -> str:
    """Request ``n`` of the mix: 5 % errors, 2.5 % slow, the rest ordinary."""
    if n % 20 == 0:
        return "fail"
    if n % 40 == 1:
        return "slow"
    return "items"


@pytest.mark.slow
class TestServedSampling:
    def test_errors_and_slow_requests_are_kept_the_rest_sampled_and_counted(self) -> None:
        """0.1 over 2,000 requests with 5 % errors and some slow ones: every error and slow request has its
        line (slow ones at warning), ordinary ones within 30 % of 10 %, and the counter says how many were not."""
        env = {"OPSKIT_ACCESS_LOG_SAMPLE": "0.1", "OPSKIT_ACCESS_LOG_SLOW_THRESHOLD": "0.05"}
        mix = [kind(n) for n in range(2000)]

        def load(client: httpx.Client) -> None:
            for n, what in enumerate(mix):
                client.get(f"/{what}/{n}")

        lines, metrics = serve(env, load)
        logged = {what: [line for line in lines if line["path"].startswith(f"/{what}/")] for what in set(mix)}
        assert {line["path"] for line in logged["fail"]} == {f"/fail/{n}" for n, k in enumerate(mix) if k == "fail"}
        assert all(line["level"] == "error" and line["status"] == 503 for line in logged["fail"])
        assert {line["path"] for line in logged["slow"]} == {f"/slow/{n}" for n, k in enumerate(mix) if k == "slow"}
        assert all(line["level"] == "warning" for line in logged["slow"])
        ordinary = mix.count("items")
        assert 0.07 * ordinary <= len(logged["items"]) <= 0.13 * ordinary
        assert skipped(metrics) == ordinary - len(logged["items"])

    def test_at_equal_rates_the_logged_requests_are_the_traced_ones(self) -> None:
        """OTEL_TRACES_SAMPLER=traceidratio at 0.2 and OPSKIT_ACCESS_LOG_SAMPLE=0.2: the ordinary requests with a
        line are exactly those whose span reached the collector."""
        with otlp_receiver() as receiver:
            env = {
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_TRACES_SAMPLER": "traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "0.2",
                "OPSKIT_ACCESS_LOG_SAMPLE": "0.2",
            }

            def load(client: httpx.Client) -> None:
                for n in range(400):
                    client.get(f"/items/{n}")

            lines, metrics = serve(env, load)
            spans = [s for s in receiver.spans() if s.attributes.get("http.route") == "/items/{item_id}"]
        assert 40 <= len(spans) <= 120
        assert {line["trace_id"] for line in lines} == {span.trace_id for span in spans}
        assert skipped(metrics) == 400 - len(lines)

    def test_4xx_are_kept_when_asked(self) -> None:
        """With OPSKIT_ACCESS_LOG_SAMPLE_KEEP_4XX every 422 has its line, though nothing else is sampled in."""
        env = {"OPSKIT_ACCESS_LOG_SAMPLE": "0", "OPSKIT_ACCESS_LOG_SAMPLE_KEEP_4XX": "true"}

        def load(client: httpx.Client) -> None:
            for n in range(20):
                client.get(f"/items/{n}")
                client.get(f"/items/not-a-number-{n}")

        lines, metrics = serve(env, load)
        assert sorted(line["path"] for line in lines) == sorted(f"/items/not-a-number-{n}" for n in range(20))
        assert skipped(metrics) == 20
