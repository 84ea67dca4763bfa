"""In-process cost of a traced request (no server, no network): ``python bench/tracing_micro.py``.

Compares, at 100 % sampling, opskit's tracing component with opentelemetry-instrumentation-asgi's
``OpenTelemetryMiddleware`` (default, and tuned without the per-message receive/send spans), with
``FastAPIInstrumentor`` and with FastAPI's own native telemetry. Every variant exports to the same
no-op exporter through a ``BatchSpanProcessor``, so the numbers are the per-request cost on the
event loop, not the network's. Each variant runs in a fresh process (tracer providers are global);
reports microseconds of CPU time per request (best of ROUNDS) and the cost added to the bare app.
Not a test; the end-to-end numbers come from ``make bench``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

# The official instrumentation emits the same stable HTTP attributes as opskit only when opted in.
os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import opskit
import opskit.tracing
from bench import asgi_driver
from bench.asgi_driver import http_scope
from opskit.tracing import pipeline

ONLY_TRACING = {
    "request_id_enabled": False,
    "logging_enabled": False,
    "metrics_enabled": False,
    "ratelimit_enabled": False,
    "health_enabled": False,
}
PATH = "/items/42"
TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class NullExporter(SpanExporter):
    """Accepts every batch and does nothing: the export thread's cost is not the request's."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def provider() -> TracerProvider:
    tracer_provider = TracerProvider(resource=Resource({"service.name": "bench"}), shutdown_on_exit=False)
    tracer_provider.add_span_processor(BatchSpanProcessor(NullExporter(), max_queue_size=65536))
    return tracer_provider


def fastapi_app(native_telemetry: bool = False) -> FastAPI:
    app = FastAPI() if native_telemetry else FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False})

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    return app


def make(variant: str) -> Any:
    if variant == "fastapi_native":  # FastAPI's built-in spans, switched on by a global tracer provider
        trace.set_tracer_provider(provider())
        return fastapi_app(native_telemetry=True)
    app = fastapi_app()
    if variant == "opskit_off":  # the opskit middleware with no component at all
        return opskit.instrument(app, tracing_enabled=False, **ONLY_TRACING)
    if variant == "opskit_tracing":
        pipeline.build_exporter = lambda settings: NullExporter()
        return opskit.instrument(app, traces_exporter="otlp", bsp_max_queue_size=65536, **ONLY_TRACING)
    if variant == "otel_asgi":
        return OpenTelemetryMiddleware(app, tracer_provider=provider())
    if variant == "otel_asgi_tuned":
        return OpenTelemetryMiddleware(app, tracer_provider=provider(), exclude_spans=["receive", "send"])
    if variant == "otel_fastapi":
        FastAPIInstrumentor.instrument_app(app, tracer_provider=provider())
        return app
    return app


async def drive(app: Any, n: int, traceparent: bool) -> float:
    headers = [(b"host", b"bench"), (b"user-agent", b"bench/1"), (b"accept", b"*/*")]
    if traceparent:
        headers.append((b"traceparent", TRACEPARENT))
    return await asgi_driver.drive(app, n, http_scope(PATH, headers), warmup=500)


VARIANTS = [
    "bare",
    "opskit_off",
    "opskit_tracing",
    "otel_asgi_tuned",
    "otel_asgi",
    "otel_fastapi",
    "fastapi_native",
    "hooks_only",
    "encode_sdk",
    "encode_python",
    "encode_direct",
]


def hooks_only(n: int, traceparent: bool) -> float:
    """The tracing component's three hooks on a bare Exchange: its own cost, without any app."""
    from opskit.exchange import Exchange
    from opskit.runtime import Runtime
    from opskit.settings import load_settings

    pipeline.build_exporter = lambda settings: NullExporter()
    runtime = Runtime(load_settings(traces_exporter="otlp", bsp_max_queue_size=65536))
    component = opskit.tracing.create_component(runtime)
    assert component is not None
    headers = [(b"host", b"bench"), (b"user-agent", b"bench/1"), (b"accept", b"*/*")]
    if traceparent:
        headers.append((b"traceparent", TRACEPARENT))
    scope = {"type": "http", "method": "GET", "path": PATH, "scheme": "http", "http_version": "1.1",
             "headers": headers, "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}  # fmt: skip

    def request(traced: bool) -> None:
        ex = Exchange(scope, runtime)
        if traced:
            component.request_started(ex)
        ex.status = 200
        if traced:
            component.response_started(ex)
        ex.end = time.perf_counter()
        ex.route = "/items/{item_id}"
        if traced:
            component.request_finished(ex)
            component.request_closed(ex)

    costs = []
    for traced in (False, True, False, True):
        start = time.process_time()
        for _ in range(n):
            request(traced)
        costs.append((time.process_time() - start) / n * 1e6)
    return min(costs[1], costs[3]) - min(costs[0], costs[2])


def encoding(n: int, direct: bool) -> float:
    """CPU per span of encoding a batch of 512 request spans for OTLP (done on the export thread):
    by the SDK, by opskit's Python encoder (``encode_python``) or with its compiled span encoder."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

    from opskit.tracing.otlp import RequestSpanEncoder

    attributes: dict[str, Any] = {
        "http.request.method": "GET",
        "url.scheme": "http",
        "network.protocol.version": "1.1",
        "server.address": "bench",
        "client.address": "127.0.0.1",
        "user_agent.original": "bench/1",
        "http.route": "/items/{item_id}",
        "http.response.status_code": 200,
    }
    resource = Resource({"service.name": "bench"})
    spans = [
        ReadableSpan(
            "GET /items/{item_id}",
            SpanContext(i + 1, i + 1, False, TraceFlags(1)),
            None,
            resource,
            {**attributes, "url.path": f"/items/{i}", "request_id": f"{i:032x}"},
            kind=SpanKind.SERVER,
            instrumentation_scope=pipeline.SCOPE,
            start_time=1,
            end_time=2,
        )
        for i in range(512)
    ]
    encoder = RequestSpanEncoder(pipeline.SCOPE)
    rounds = max(1, n // 512)
    start = time.process_time()
    for _ in range(rounds):
        if direct:
            encoder.encode(spans)
        else:
            encode_spans(spans).SerializePartialToString()
    return (time.process_time() - start) / (rounds * 512) * 1e6


def one(variant: str, n: int, traceparent: bool) -> float:
    if variant in ("encode_sdk", "encode_python", "encode_direct"):
        if variant == "encode_python":  # opskit's direct encoder without its compiled half
            from opskit.tracing import otlp

            otlp.native_span = None
        return encoding(n, variant != "encode_sdk")
    if variant == "hooks_only":
        us = hooks_only(n, traceparent)
        opskit.tracing.shutdown()
        return us
    us = asyncio.run(drive(make(variant), n, traceparent))
    opskit.tracing.shutdown()
    return us


def main() -> None:
    n = int(os.environ.get("N", "10000"))
    traceparent = os.environ.get("TRACEPARENT", "0") == "1"
    if sys.argv[1:2] == ["--one"]:
        print(one(sys.argv[2], n, traceparent))
        return
    variants = sys.argv[1:] or VARIANTS
    results: dict[str, float] = {}
    for _ in range(int(os.environ.get("ROUNDS", "5"))):
        for variant in variants:
            out = subprocess.run(
                [sys.executable, __file__, "--one", variant], check=True, capture_output=True, text=True
            ).stdout
            us = float(out.strip().splitlines()[-1])
            results[variant] = min(results.get(variant, us), us)
    bare = results.get("bare")
    print(f"N={n} requests per run, best of rounds, incoming traceparent: {'yes' if traceparent else 'no'}")
    for variant, us in results.items():
        if variant == "hooks_only":
            print(f"{variant:16s} {us:7.1f} us/request (the component's hooks alone, no app)")
            continue
        if variant.startswith("encode_"):
            print(f"{variant:16s} {us:7.1f} us/span (OTLP encoding on the export thread)")
            continue
        extra = f"  (+{us - bare:5.1f} us, {bare / us:.2f}x bare throughput)" if bare and variant != "bare" else ""
        print(f"{variant:16s} {us:7.1f} us/request{extra}")


if __name__ == "__main__":
    main()
