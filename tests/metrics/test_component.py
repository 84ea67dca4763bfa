"""The metrics component inside opskit's middleware, driven in-process."""

from __future__ import annotations

import asyncio
import random
from asyncio.subprocess import PIPE, STDOUT
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import prometheus_client
import pytest

from bench.asgi_driver import http_scope
from opskit.metrics import Registry
from opskit.metrics.component import MetricsComponent
from opskit.middleware import OpskitMiddleware
from opskit.settings import load_settings
from tests.metrics import app as test_app
from tests.metrics.parsing import parse_openmetrics, parse_text
from tests.servers import which

TRACE = "5b8efff798038103d269b633813fc60c"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Served:
    """The test app behind the middleware, a client for it, and its metrics component."""

    def __init__(self, **overrides: Any) -> None:
        self.registry = Registry(None)
        settings = load_settings(logging_enabled=False, **overrides)
        self.app, self.metrics = test_app.wrapped(settings, self.registry)
        self.app_middleware: OpskitMiddleware = self.app
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app, raise_app_exceptions=False), base_url="http://test"
        )

    async def scrape(self, openmetrics: bool = False) -> str:
        accept = "application/openmetrics-text; version=1.0.0" if openmetrics else "text/plain"
        r = await self.client.get("/metrics", headers={"accept": accept})
        assert r.status_code == 200
        return r.text

    async def samples(self) -> Samples:
        out: Samples = {}
        for family in parse_text(await self.scrape()):
            for s in family.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out


def pick(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no {name}{labels} in {sorted(k for k in samples if k[0] == name)}"
    return samples[key]


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    s = Served()
    async with s.client:
        yield s
    s.registry.close()


class TestRequests:
    async def test_counted_by_method_route_template_and_status(self, served: Served) -> None:
        """Requests are counted under their route template (mounts included) and exact status."""
        for i in range(3):
            assert (await served.client.get(f"/items/{i}")).status_code == 200
        await served.client.get("/items/not-a-number")
        await served.client.get("/sub/hello/ann")
        await served.client.post("/items/1")
        got = await served.samples()
        assert pick(got, "http_requests_total", method="GET", route="/items/{item_id}", status="200") == 3
        assert pick(got, "http_requests_total", method="GET", route="/items/{item_id}", status="422") == 1
        assert pick(got, "http_requests_total", method="GET", route="/sub/hello/{name}", status="200") == 1
        assert pick(got, "http_requests_total", method="POST", route="/items/{item_id}", status="405") == 1
        assert pick(got, "http_request_duration_seconds_count", method="GET", route="/items/{item_id}") == 4
        assert pick(got, "opskit_build_info", version="", service="unknown_service") == 1

    async def test_status_can_be_grouped(self) -> None:
        """With OPSKIT_METRICS_GROUP_STATUS the label is 2xx, 4xx..."""
        s = Served(metrics_group_status=True)
        async with s.client:
            await s.client.get("/items/1")
            await s.client.get("/items/x")
            got = await s.samples()
        assert pick(got, "http_requests_total", method="GET", route="/items/{item_id}", status="2xx") == 1
        assert pick(got, "http_requests_total", method="GET", route="/items/{item_id}", status="4xx") == 1
        s.registry.close()

    async def test_unknown_methods_collapse(self, served: Served) -> None:
        """A made-up method cannot create label values: it is counted as OTHER."""
        for method in ("FOO", "BAR1", "X" * 50):
            await served.client.request(method, "/items/1")
        got = await served.samples()
        assert pick(got, "http_requests_total", method="OTHER", route="/items/{item_id}", status="405") == 3

    async def test_unhandled_exceptions_are_counted_by_type(self, served: Served) -> None:
        """An exception escaping the app counts in http_exceptions_total and as a 500."""
        assert (await served.client.get("/boom")).status_code == 500
        got = await served.samples()
        assert pick(got, "http_exceptions_total", method="GET", route="/boom", exception_type="LookupError") == 1
        assert pick(got, "http_requests_total", method="GET", route="/boom", status="500") == 1

    async def test_sizes(self, served: Served) -> None:
        """Request sizes come from Content-Length, response sizes from the bytes sent."""
        r = await served.client.post("/upload", content=b"x" * 500)
        got = await served.samples()
        assert pick(got, "http_request_size_bytes_sum", method="POST", route="/upload") == 500
        assert pick(got, "http_response_size_bytes_sum", method="POST", route="/upload") == len(r.content)

    async def test_a_request_without_a_body_is_in_the_first_size_bucket(self, served: Served) -> None:
        """A GET without Content-Length counts as 0 bytes: the first bucket, nothing added to the sum."""
        await served.client.get("/items/1")
        await served.client.get("/items/2")
        got = await served.samples()
        item = {"method": "GET", "route": "/items/{item_id}"}
        assert pick(got, "http_request_size_bytes_bucket", **item, le="100.0") == 2
        assert pick(got, "http_request_size_bytes_sum", **item) == 0
        assert pick(got, "http_request_size_bytes_count", **item) == 2

    async def test_sizes_can_be_off(self) -> None:
        """OPSKIT_METRICS_SIZE_ENABLED=false drops both size histograms."""
        s = Served(metrics_size_enabled=False)
        async with s.client:
            await s.client.get("/items/1")
            text = await s.scrape()
        assert "http_request_size_bytes" not in text and "http_response_size_bytes" not in text
        assert 'http_requests_total{method="GET",route="/items/{item_id}",status="200"} 1.0' in text
        s.registry.close()

    async def test_duration_ends_with_the_body_not_the_background_task(self, served: Served) -> None:
        """A 1 s BackgroundTask after the response is not part of the measured duration."""
        r = await served.client.get("/background")
        assert r.status_code == 200
        got = await served.samples()
        assert pick(got, "http_request_duration_seconds_count", method="GET", route="/background") == 1
        assert pick(got, "http_request_duration_seconds_sum", method="GET", route="/background") < 0.3

    async def test_excluded_paths_are_not_measured(self) -> None:
        """Paths in OPSKIT_METRICS_EXCLUDE_PATHS (exact or prefix*) are not counted."""
        s = Served(metrics_exclude_paths="/items/*,/boom")
        async with s.client:
            await s.client.get("/items/1")
            await s.client.get("/sub/hello/x")
            text = await s.scrape()
        assert "/items/" not in text
        assert 'route="/sub/hello/{name}"' in text
        s.registry.close()

    async def test_exact_excluded_paths_leave_their_neighbours_measured(self) -> None:
        """Exact paths alone exclude just those paths: /items/1 is not counted, /items/2 is."""
        s = Served(metrics_exclude_paths="/items/1")
        async with s.client:
            await s.client.get("/items/1")
            await s.client.get("/items/2")
            got = await s.samples()
        assert pick(got, "http_requests_total", method="GET", route="/items/{item_id}", status="200") == 1
        s.registry.close()


class TestCardinality:
    async def test_random_unmatched_paths_add_one_route_value(self, served: Served) -> None:
        """10 000 requests to random unknown paths add exactly one route label value."""
        rng = random.Random(7)
        sent: list[Any] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Any) -> None:
            sent.append(message)

        await served.client.get("/items/1")
        for _ in range(10_000):
            path = "/" + "/".join(f"{rng.getrandbits(40):x}" for _ in range(rng.randint(1, 4)))
            await served.app(http_scope(path), receive, send)
        statuses = {m["status"] for m in sent if m["type"] == "http.response.start"}
        assert statuses == {404}
        got = await served.samples()
        routes = {dict(labels)["route"] for name, labels in got if name == "http_requests_total"}
        assert routes == {"/items/{item_id}", "__unmatched__"}
        assert pick(got, "http_requests_total", method="GET", route="__unmatched__", status="404") == 10_000


class TestInProgress:
    async def test_a_request_in_flight_is_counted_under_its_route(self, served: Served) -> None:
        """While /hold waits, the gauge shows 1 under its route; afterwards 0."""
        test_app.release.clear()
        task = asyncio.create_task(served.client.get("/hold"))
        for _ in range(200):
            await asyncio.sleep(0.01)
            if served.metrics._live:
                break
        got = await served.samples()
        assert pick(got, "http_requests_in_progress", method="GET", route="/hold") == 1
        test_app.release.set()
        assert (await task).status_code == 200
        got = await served.samples()
        assert pick(got, "http_requests_in_progress", method="GET", route="/hold") == 0


class TestExemplars:
    async def test_trace_id_becomes_the_exemplar(self, served: Served) -> None:
        """ex.trace_id of a sampled request is the exemplar of its counter and duration bucket."""
        await served.client.get("/items/1")
        await served.client.get("/items/2", headers={"x-test-trace-id": TRACE})
        families = {f.name: f for f in parse_openmetrics(await served.scrape(openmetrics=True))}
        counted = [s for s in families["http_requests"].samples if s.labels.get("route") == "/items/{item_id}"]
        assert counted[0].exemplar is not None and counted[0].exemplar.labels == {"trace_id": TRACE}
        buckets = [s for s in families["http_request_duration_seconds"].samples if s.exemplar is not None]
        assert [s.exemplar.labels["trace_id"] for s in buckets if s.exemplar] == [TRACE]

    async def test_exemplars_can_be_off(self) -> None:
        """OPSKIT_METRICS_EXEMPLARS=false records none."""
        s = Served(metrics_exemplars=False)
        async with s.client:
            await s.client.get("/items/2", headers={"x-test-trace-id": TRACE})
            assert TRACE not in await s.scrape(openmetrics=True)
        s.registry.close()


class TestEndpoint:
    async def test_negotiates_format_and_gzip(self, served: Served) -> None:
        """OpenMetrics for Prometheus' Accept, the text format otherwise, gzip when accepted."""
        r = await served.client.get("/metrics", headers={"accept": "application/openmetrics-text;version=1.0.0"})
        assert r.headers["content-type"].startswith("application/openmetrics-text")
        assert r.text.endswith("# EOF\n")
        r = await served.client.get("/metrics", headers={"accept-encoding": "gzip"})
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert r.headers["content-encoding"] == "gzip"
        assert "# TYPE http_requests_total counter" in r.text
        assert (await served.client.post("/metrics")).status_code == 405

    async def test_promtool_accepts_the_real_exposition(self, served: Served) -> None:
        """Every metric the component exposes passes `promtool check metrics` without a warning."""
        await served.client.get("/items/1", headers={"x-test-trace-id": TRACE})
        await served.client.get("/boom")
        await served.client.post("/upload", content=b"abc")
        await served.client.get("/nowhere")
        text = await served.scrape()
        for name in ("http_requests_total", "http_exceptions_total", "http_request_size_bytes", "opskit_build_info"):
            assert f"# TYPE {name} " in text
        promtool = await asyncio.create_subprocess_exec(
            which("promtool"), "check", "metrics", stdin=PIPE, stdout=PIPE, stderr=STDOUT
        )
        out, _ = await asyncio.wait_for(promtool.communicate(text.encode()), 30)
        assert (promtool.returncode, out.decode()) == (0, "")

    async def test_metrics_path_is_not_measured(self, served: Served) -> None:
        """Scrapes are not counted as requests."""
        await served.scrape()
        assert 'route="/metrics"' not in await served.scrape()

    async def test_app_port_can_drop_the_endpoint(self) -> None:
        """With OPSKIT_METRICS_ON_APP_PORT=false /metrics is just an unknown path of the app."""
        s = Served(metrics_on_app_port=False)
        async with s.client:
            r = await s.client.get("/metrics")
        assert r.status_code == 404
        assert "http_requests_total" not in r.text
        s.registry.close()

    async def test_path_is_configurable(self) -> None:
        """OPSKIT_METRICS_PATH moves the endpoint."""
        s = Served(metrics_path="/internal/prom")
        async with s.client:
            assert "http_requests_total" in (await s.client.get("/internal/prom")).text
        s.registry.close()


class TestPrometheusClientMetrics:
    async def test_default_registry_is_on_the_same_endpoint(self, served: Served) -> None:
        """Metrics defined with prometheus_client (the app's, a library's) are exposed too, in both formats."""
        counter = prometheus_client.Counter("opskit_test_bridged_total", "Bridged.")
        try:
            counter.inc(3)
            assert "opskit_test_bridged_total 3.0" in await served.scrape()
            text = await served.scrape(openmetrics=True)
            assert text.count("# EOF") == 1
            families = {f.name: f for f in parse_openmetrics(text)}
            assert families["opskit_test_bridged"].samples[0].value == 3.0
            assert "http_requests" in families and "process_cpu_seconds" in families
        finally:
            prometheus_client.REGISTRY.unregister(counter)

    async def test_opskit_families_win_over_the_same_names(self, served: Served) -> None:
        """A prometheus_client metric named like one of opskit's is not exposed twice."""
        duplicate = prometheus_client.Counter("http_requests_total", "Someone else's.", ["path"])
        try:
            duplicate.labels("/raw/path").inc()
            await served.client.get("/items/1")
            text = await served.scrape()
            assert text.count("# TYPE http_requests_total counter") == 1 and "/raw/path" not in text
            parse_openmetrics(await served.scrape(openmetrics=True))  # duplicates would fail to parse
        finally:
            prometheus_client.REGISTRY.unregister(duplicate)


def test_component_is_registered_by_instrument() -> None:
    """instrument() installs the metrics component unless metrics are off."""
    from fastapi import FastAPI

    import opskit
    from opskit.instrument import build_components
    from opskit.runtime import Runtime
    from opskit.settings import load_settings as load

    assert any(
        isinstance(c, MetricsComponent) for c in build_components(Runtime(load(logging_enabled=False), FastAPI()))
    )
    assert not any(
        isinstance(c, MetricsComponent) for c in build_components(Runtime(load(metrics_enabled=False), FastAPI()))
    )
    assert opskit.instrument is not None


@pytest.fixture(autouse=True)
def _released() -> Iterator[None]:
    yield
    test_app.release.set()
