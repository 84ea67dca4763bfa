"""Micro-benchmark of the metrics hot path (not a test): ``python bench/metrics_micro.py``.

Compares, per request, the metrics work of opskit's component (in memory and with a
multi-worker directory) with the same updates done through prometheus_client's multiprocess
mode, and measures whole in-process requests of a FastAPI app bare vs. with opskit metrics.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.asgi_driver import drive

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

N = 200_000


def per_call_us(fn: Callable[[], None], number: int = N) -> float:
    fn()
    best = min(timeit.repeat(fn, number=number, repeat=5))
    return best / number * 1e6


def opskit_component(directory: str | None, naming: str = "prometheus") -> float:
    from opskit.exchange import Exchange
    from opskit.metrics.component import metrics_component
    from opskit.metrics.registry import Registry
    from opskit.runtime import Runtime
    from opskit.settings import load_settings

    runtime = Runtime(load_settings(prometheus_multiproc_dir=directory, metrics_naming=naming))
    registry = Registry(directory)
    component = metrics_component(runtime, registry)
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "path": "/items/1",
        "headers": [(b"host", b"x"), (b"content-length", b"10")],
    }
    ex = Exchange(scope, None)  # type: ignore[arg-type]
    ex.status = 200
    ex.route = "/items/{item_id}"
    ex.end = ex.start + 0.012
    ex.response_bytes = 120

    def one() -> None:
        component.request_started(ex)
        component.request_finished(ex)

    result = per_call_us(one)
    registry.close()
    return result


def prometheus_client_multiprocess(directory: str) -> float:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    registry = CollectorRegistry()
    labels = ("method", "route")
    requests = Counter("http_requests_total", "r", (*labels, "status"), registry=registry)
    duration = Histogram("http_request_duration_seconds", "d", labels, registry=registry)
    in_progress = Gauge("http_requests_in_progress", "p", labels, registry=registry, multiprocess_mode="livesum")
    req_size = Histogram("http_request_size_bytes", "q", labels, registry=registry)
    resp_size = Histogram("http_response_size_bytes", "s", labels, registry=registry)

    def one() -> None:
        in_progress.labels("GET", "/items/{item_id}").inc()
        requests.labels("GET", "/items/{item_id}", "200").inc()
        duration.labels("GET", "/items/{item_id}").observe(0.012)
        req_size.labels("GET", "/items/{item_id}").observe(10)
        resp_size.labels("GET", "/items/{item_id}").observe(120)
        in_progress.labels("GET", "/items/{item_id}").dec()

    result = per_call_us(one, N // 4)
    del os.environ["PROMETHEUS_MULTIPROC_DIR"]
    return result


def scrape_ms(directory: str, workers: int = 16, routes: int = 50) -> float:
    """One scrape (merge and render) with ``workers`` worker files of full HTTP series each."""
    from opskit.exchange import Exchange
    from opskit.metrics.component import MetricsComponent
    from opskit.metrics.exposition import render
    from opskit.metrics.registry import Registry
    from opskit.runtime import Runtime
    from opskit.settings import load_settings

    runtime = Runtime(load_settings(prometheus_multiproc_dir=directory))
    registries = []
    for _ in range(workers):  # each registry writes a file of its own, as a worker would
        registry = Registry(directory)
        component = MetricsComponent(runtime, registry)
        for r in range(routes):
            for status in (200, 404, 500):
                ex = Exchange({"type": "http", "method": "GET", "path": "/", "headers": []}, None)  # type: ignore[arg-type]
                ex.status, ex.route, ex.end = status, f"/route/{r}", ex.start + 0.01
                component.request_started(ex)
                component.request_finished(ex)
        registries.append(registry)
    reader = registries[0]
    best = min(timeit.repeat(lambda: render(reader.collect(), True), number=5, repeat=3)) / 5
    for registry in registries:
        registry.close()
    return best * 1e3


def asgi_app(instrumented: bool, metrics: bool = True) -> Any:
    from fastapi import FastAPI

    import opskit

    app = FastAPI()
    if instrumented:
        opskit.instrument(
            app,
            logging_enabled=False,
            request_id_enabled=False,
            tracing_enabled=False,
            ratelimit_enabled=False,
            health_enabled=False,
            metrics_enabled=metrics,
        )

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    return app


async def _time(app: Any, n: int) -> float:
    return await drive(app, n)


def whole_requests(rounds: int = 7, n: int = 3000) -> tuple[float, float, float]:
    """Best per-request time of the bare app, the middleware alone and the middleware with metrics,
    measured in alternation (the machine is shared: alternating keeps them under the same load)."""
    apps = (asgi_app(False), asgi_app(True, metrics=False), asgi_app(True))

    async def run() -> tuple[float, float, float]:
        for app in apps:
            await _time(app, 500)
        best = [float("inf")] * len(apps)
        for _ in range(rounds):
            for i, app in enumerate(apps):
                best[i] = min(best[i], await _time(app, n))
        return best[0], best[1], best[2]

    return asyncio.run(run())


def main() -> None:
    with tempfile.TemporaryDirectory() as ours, tempfile.TemporaryDirectory() as theirs:
        rows = [
            ("opskit component, in memory (per request)", opskit_component(None)),
            ("opskit component, multi-worker directory (per request)", opskit_component(ours)),
            ("opskit component, OpenTelemetry naming, in memory (per request)", opskit_component(None, "otel")),
            ("prometheus_client multiprocess, same updates (per request)", prometheus_client_multiprocess(theirs)),
        ]
    with tempfile.TemporaryDirectory() as scraped:
        scrape = scrape_ms(scraped)
    bare, middleware, metrics = whole_requests()
    rows += [
        ("FastAPI request, bare", bare),
        ("FastAPI request, opskit middleware, no feature", middleware),
        ("FastAPI request, opskit middleware + metrics only", metrics),
    ]
    width = max(len(name) for name, _ in rows)
    for name, us in rows:
        print(f"{name:<{width}}  {us:8.2f} us")
    print(f"{'throughput ratio metrics/bare':<{width}}  {bare / metrics:8.3f}")
    print(f"{'scrape: 16 worker files, 50 routes x 3 statuses each':<{width}}  {scrape:8.2f} ms")


if __name__ == "__main__":
    main()
