"""One runtime per process: what the app says in ``instrument()`` is the truth for every feature."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import opskit
from opskit.runtime import Runtime, build_runtime, current
from tests.serving.processes import json_lines, opskit_serve
from tests.tracing.receiver import OtlpReceiver, otlp_receiver


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as r:
        yield r


def serve_and_load(receiver: OtlpReceiver, overrides: dict[str, Any]) -> tuple[set[int], list[dict[str, Any]], str]:
    """`opskit serve` (2 workers) of an app instrumented with ``overrides``, tracing set in the
    environment as the chart sets it; requests until both workers answered, then SIGTERM.

    Returns the worker PIDs that answered, the JSON lines written, and one scrape of /metrics.
    """
    env = {
        "WEB_CONCURRENCY": "2",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_SERVICE_NAME": "from-env",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "TEST_OVERRIDES": json.dumps(overrides),
    }
    with opskit_serve("tests.apps.overridden:app", env) as (process, port):
        pids: set[int] = set()
        for _ in range(200):
            r = httpx.get(f"http://127.0.0.1:{port}/work", headers={"Connection": "close"}, timeout=10)
            assert r.status_code == 200
            pids.add(r.json()["pid"])
            if len(pids) == 2:
                break
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        process.send_signal(signal.SIGTERM)  # workers flush their spans on the way out
        assert process.wait(30) == 0, process.stderr()
        lines = json_lines(process.stdout())
    return pids, lines, metrics


def build_info(metrics: str) -> list[dict[str, str]]:
    return [
        sample.labels
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "opskit_build_info"
    ]


@pytest.mark.slow
class TestServedOverrides:
    def test_tracing_switched_off_by_the_app_exports_nothing(self, receiver: OtlpReceiver) -> None:
        """instrument(app, tracing_enabled=False) with OTEL_EXPORTER_OTLP_ENDPOINT set: no span leaves
        either worker, user code's spans included."""
        pids, lines, _ = serve_and_load(receiver, {"tracing_enabled": False})
        assert len(pids) == 2
        assert [line for line in lines if line.get("path") == "/work"]  # the app served and logged
        assert receiver.spans() == [] and receiver.requests == []

    def test_service_name_reaches_spans_logs_and_build_info(self, receiver: OtlpReceiver) -> None:
        """instrument(app, service_name=...) names the span resource, every log line of the workers and
        ``opskit_build_info``, over OTEL_SERVICE_NAME."""
        pids, lines, metrics = serve_and_load(receiver, {"service_name": "from-app"})
        assert len(pids) == 2
        spans = receiver.wait_for(4)
        assert {span.name for span in spans} == {"GET /work", "user work"}
        assert {span.resource["service.name"] for span in spans} == {"from-app"}
        requests = [line for line in lines if line.get("logger") in ("opskit.access", "tests.user")]
        assert len(requests) >= 4 and {line["service"] for line in requests} == {"from-app"}
        assert [labels["service"] for labels in build_info(metrics)] == ["from-app"]


class TestRuntime:
    def test_overrides_are_the_process_truth(self) -> None:
        """The runtime instrument() builds becomes the process's current one, overrides included."""
        from fastapi import FastAPI

        app = opskit.instrument(FastAPI(), service_name="said-by-app", metrics_enabled=False)
        assert current().settings.service_name == "said-by-app"
        assert current().app is app

    def test_current_reads_the_environment_once(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without instrument(), the first caller builds the runtime from the environment; later ones share it."""
        monkeypatch.setenv("OTEL_SERVICE_NAME", "first")
        first = current()
        monkeypatch.setenv("OTEL_SERVICE_NAME", "second")
        assert current() is first and first.settings.service_name == "first"
        assert build_runtime().settings.service_name == "second"

    def test_a_service_is_built_once(self) -> None:
        """What a feature builds for a runtime (the limiter) is built on first use and shared."""
        runtime = Runtime(opskit.load_settings())
        built: list[Runtime] = []

        def build(rt: Runtime) -> object:
            built.append(rt)
            return object()

        first = runtime.service("thing", build)
        assert runtime.service("thing", build) is first
        assert built == [runtime]
