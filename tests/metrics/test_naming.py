"""OPSKIT_METRICS_NAMING: the family table, the conventions' series in /metrics, and their OTLP names."""

from __future__ import annotations

import asyncio
from asyncio.subprocess import PIPE, STDOUT
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

from bench.asgi_driver import http_scope
from opskit.metrics.component import metrics_component
from opskit.metrics.naming import NAMINGS, families, label_for, prometheus_name
from opskit.metrics.otlp import OtlpMetrics
from opskit.metrics.registry import Registry
from opskit.middleware import OpskitMiddleware
from opskit.runtime import Runtime
from opskit.settings import ConfigError, load_settings
from tests.metrics.parsing import parse_openmetrics
from tests.metrics.test_component import TRACE, Served, pick
from tests.servers import free_port, which
from tests.tracing.receiver import attributes

pytestmark = pytest.mark.anyio

OTEL = {"metrics_naming": "otel"}
GET_ITEM = {"http_request_method": "GET", "http_route": "/items/{item_id}", "url_scheme": "http"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def otel() -> AsyncIterator[Served]:
    s = Served(**OTEL)
    async with s.client:
        yield s
    s.registry.close()


class TestTable:
    """The names each naming declares, and the exporter's translation they follow."""

    @pytest.mark.parametrize(
        ("name", "unit", "kind", "expected"),
        [
            ("http.server.request.duration", "s", "histogram", "http_server_request_duration_seconds"),
            ("http.server.active_requests", "{request}", "gauge", "http_server_active_requests"),
            ("http.server.request.body.size", "By", "histogram", "http_server_request_body_size_bytes"),
            ("http.server.requests", "{request}", "counter", "http_server_requests_total"),
            ("queue.time", "s", "counter", "queue_time_seconds_total"),
            ("cpu.utilization", "1", "gauge", "cpu_utilization_ratio"),
            ("already_seconds", "s", "histogram", "already_seconds"),
        ],
    )
    def test_prometheus_names_follow_the_exporter(self, name: str, unit: str, kind: Any, expected: str) -> None:
        """Dots become underscores, the unit's word is appended once, a counter ends in _total."""
        assert prometheus_name(name, unit, kind) == expected

    def test_attribute_keys_become_labels(self) -> None:
        """http.response.status_code is http_response_status_code in /metrics."""
        assert label_for("http.response.status_code") == "http_response_status_code"
        assert label_for("url.scheme") == "url_scheme"

    def test_otel_families_are_the_conventions(self) -> None:
        """Names, units and attributes of the stable HTTP server conventions; no request counter."""
        table = families("otel")
        assert "requests" not in table
        duration = table["duration"]
        assert (duration.otlp_name, duration.unit, duration.name) == (
            "http.server.request.duration",
            "s",
            "http_server_request_duration_seconds",
        )
        server = ("http.request.method", "http.route", "http.response.status_code", "url.scheme", "error.type")
        assert duration.attributes == server
        assert duration.labels == tuple(a.replace(".", "_") for a in server)
        active = table["active"]
        assert (active.otlp_name, active.unit, active.name) == (
            "http.server.active_requests",
            "{request}",
            "http_server_active_requests",
        )
        assert active.attributes == ("http.request.method", "url.scheme")
        assert table["request_size"].otlp_name == "http.server.request.body.size"
        assert table["response_size"].name == "http_server_response_body_size_bytes"
        assert table["request_size"].attributes == table["response_size"].attributes == server

    def test_prometheus_families_keep_todays_names(self) -> None:
        """The default naming is unchanged: names, labels, and OTLP names equal to the Prometheus ones."""
        table = families("prometheus")
        shapes = {
            role: (f.name, f.labels, f.otlp_name == f.name, f.attributes == f.labels) for role, f in table.items()
        }
        assert shapes == {
            "requests": ("http_requests_total", ("method", "route", "status"), True, True),
            "duration": ("http_request_duration_seconds", ("method", "route"), True, True),
            "active": ("http_requests_in_progress", ("method", "route"), True, True),
            "request_size": ("http_request_size_bytes", ("method", "route"), True, True),
            "response_size": ("http_response_size_bytes", ("method", "route"), True, True),
            "exceptions": ("http_exceptions_total", ("method", "route", "exception_type"), True, True),
            "first_byte": ("http_response_first_byte_seconds", ("method", "route"), True, True),
            "ws_opened": ("websocket_connections_opened_total", ("route",), True, True),
            "ws_open": ("websocket_connections_open", ("route",), True, True),
            "ws_duration": ("websocket_connection_duration_seconds", ("route",), True, True),
            "ws_messages": ("websocket_messages_total", ("route", "direction"), True, True),
        }

    def test_families_without_a_convention_keep_their_names(self) -> None:
        """Exceptions, first byte and websockets are named alike in both; with otel, their labels are attributes."""
        prometheus, otel = families("prometheus"), families("otel")
        for role in ("exceptions", "first_byte", "ws_opened", "ws_open", "ws_duration", "ws_messages"):
            assert otel[role].name == otel[role].otlp_name == prometheus[role].name
        assert otel["exceptions"].labels == ("http_request_method", "http_route", "error_type")
        assert otel["ws_messages"].attributes == ("http.route", "direction")

    @pytest.mark.parametrize("naming", NAMINGS)
    def test_every_family_is_consistent(self, naming: Any) -> None:
        """One label, one attribute key and one field per position; the names are valid for Prometheus."""
        for family in families(naming).values():
            assert len(family.labels) == len(family.attributes) == len(family.fields), family.name
            assert all(label_for(label) == label for label in (family.name, *family.labels)), family.name


class TestSetting:
    def test_default_is_prometheus(self) -> None:
        """Without OPSKIT_METRICS_NAMING nothing changes."""
        assert load_settings().metrics_naming == "prometheus"

    def test_bad_value_names_the_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A naming opskit does not know fails at startup, naming the variable."""
        monkeypatch.setenv("OPSKIT_METRICS_NAMING", "statsd")
        with pytest.raises(ConfigError, match="OPSKIT_METRICS_NAMING='statsd'"):
            load_settings()

    def test_extra_labels_cannot_take_a_convention_label(self) -> None:
        """An extra label named like a convention label is refused at startup."""
        with pytest.raises(ConfigError, match="OPSKIT_METRICS_LABELS"):
            load_settings(metrics_labels="url_scheme")


class TestExposition:
    """The conventions' series in /metrics, from the real component behind the middleware."""

    async def test_duration_counts_requests_by_the_conventions_attributes(self, otel: Served) -> None:
        """Method, route, status code and scheme label the duration; its count is the request count."""
        for i in range(3):
            await otel.client.get(f"/items/{i}")
        await otel.client.get("/items/x")
        got = await otel.samples()
        count = "http_server_request_duration_seconds_count"
        assert pick(got, count, **GET_ITEM, http_response_status_code="200", error_type="") == 3
        assert pick(got, count, **GET_ITEM, http_response_status_code="422", error_type="") == 1
        assert not any(name.startswith(("http_requests_total", "http_request_duration")) for name, _ in got)

    async def test_a_server_error_sets_error_type(self, otel: Served) -> None:
        """A 5xx carries error.type (its status code); the exception counter names the type."""
        assert (await otel.client.get("/boom")).status_code == 500
        got = await otel.samples()
        boom = {"http_request_method": "GET", "http_route": "/boom", "url_scheme": "http"}
        count = "http_server_request_duration_seconds_count"
        assert pick(got, count, **boom, http_response_status_code="500", error_type="500") == 1
        exceptions = {"http_request_method": "GET", "http_route": "/boom", "error_type": "LookupError"}
        assert pick(got, "http_exceptions_total", **exceptions) == 1

    async def test_an_exception_before_the_response_is_the_error_type(self) -> None:
        """An app raising before it answers: opskit's 500 carries error.type = the exception's class name."""

        async def broken(scope: Any, receive: Any, send: Any) -> None:
            raise TimeoutError("backend")

        registry = Registry(None)
        runtime = Runtime(load_settings(logging_enabled=False, **OTEL), broken)
        metrics = metrics_component(runtime, registry)
        app = OpskitMiddleware(broken, runtime, [metrics])
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/x")).status_code == 500
        body, _ = await metrics.scrape.respond("text/plain", "")
        registry.close()
        labels = 'http_response_status_code="500",url_scheme="http",error_type="TimeoutError"'
        assert 'http_server_request_duration_seconds_count{http_request_method="GET",' in body.decode()
        assert labels in body.decode()

    async def test_scheme_comes_from_a_trusted_proxy(self, otel: Served) -> None:
        """X-Forwarded-Proto from a trusted proxy is the url.scheme; from anyone else it is ignored."""
        trusting = Served(**OTEL, trusted_proxies="127.0.0.1")
        async with trusting.client:
            await trusting.client.get("/items/1", headers={"x-forwarded-proto": "https"})
            behind_proxy = await trusting.samples()
        trusting.registry.close()
        await otel.client.get("/items/1", headers={"x-forwarded-proto": "https"})
        direct = await otel.samples()
        labels = {**GET_ITEM, "http_response_status_code": "200", "error_type": ""}
        count = "http_server_request_duration_seconds_count"
        assert pick(behind_proxy, count, **{**labels, "url_scheme": "https"}) == 1
        assert pick(direct, count, **labels) == 1

    async def test_unknown_methods_and_schemes_collapse(self, otel: Served) -> None:
        """A made-up method counts as OTHER and a scheme outside http/https (or none) as http, every time."""
        sent: list[Any] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Any) -> None:
            sent.append(message)

        for scheme in ("gopher", "gopher", None):
            scope = {**http_scope("/items/1"), "method": "BREW"}
            if scheme is None:
                del scope["scheme"]
            else:
                scope["scheme"] = scheme
            await otel.app(scope, receive, send)
        got = await otel.samples()
        labels = {**GET_ITEM, "http_request_method": "OTHER", "http_response_status_code": "405", "error_type": ""}
        assert pick(got, "http_server_request_duration_seconds_count", **labels) == 3
        assert not any("BREW" in str(key) or "gopher" in str(key) for key in got)

    async def test_body_sizes(self, otel: Served) -> None:
        """http.server.request.body.size from Content-Length, the response's from the bytes sent."""
        r = await otel.client.post("/upload", content=b"x" * 500)
        got = await otel.samples()
        labels = {"http_request_method": "POST", "http_route": "/upload", "url_scheme": "http"}
        labels |= {"http_response_status_code": "200", "error_type": ""}
        assert pick(got, "http_server_request_body_size_bytes_sum", **labels) == 500
        assert pick(got, "http_server_response_body_size_bytes_sum", **labels) == len(r.content)

    async def test_active_requests_by_method_and_scheme(self, otel: Served, monkeypatch: pytest.MonkeyPatch) -> None:
        """While /hold waits, http.server.active_requests is 1 for GET over http; afterwards 0."""
        from tests.metrics import app as test_app

        monkeypatch.setattr(test_app, "release", asyncio.Event())  # one of this test's event loop
        task = asyncio.create_task(otel.client.get("/hold"))
        for _ in range(200):
            await asyncio.sleep(0.01)
            if otel.metrics._live:
                break
        active = {"http_request_method": "GET", "url_scheme": "http"}
        assert pick(await otel.samples(), "http_server_active_requests", **active) == 1
        test_app.release.set()
        assert (await task).status_code == 200
        assert pick(await otel.samples(), "http_server_active_requests", **active) == 0

    async def test_extra_labels_and_exemplars(self) -> None:
        """OPSKIT_METRICS_LABELS follow the conventions' labels; a sampled trace is a bucket's exemplar."""
        s = Served(**OTEL, metrics_labels="header:X-Tenant")
        async with s.client:
            await s.client.get("/items/1", headers={"x-tenant": "acme", "x-test-trace-id": TRACE})
            families_ = {f.name: f for f in parse_openmetrics(await s.scrape(openmetrics=True))}
        s.registry.close()
        buckets = families_["http_server_request_duration_seconds"].samples
        tagged = [b for b in buckets if b.exemplar is not None]
        assert [b.exemplar.labels for b in tagged if b.exemplar] == [{"trace_id": TRACE}]
        assert tagged[0].labels["x_tenant"] == "acme" and tagged[0].labels["http_route"] == "/items/{item_id}"

    async def test_promtool_accepts_the_otel_exposition(self, otel: Served) -> None:
        """`promtool check metrics` finds nothing to complain about in the conventions' names."""
        await otel.client.get("/items/1", headers={"x-test-trace-id": TRACE})
        await otel.client.get("/boom")
        await otel.client.post("/upload", content=b"abc")
        await otel.client.get("/nowhere")
        text = await otel.scrape()
        for name in ("http_server_request_duration_seconds", "http_server_active_requests", "http_exceptions_total"):
            assert f"# TYPE {name} " in text
        promtool = await asyncio.create_subprocess_exec(
            which("promtool"), "check", "metrics", stdin=PIPE, stdout=PIPE, stderr=STDOUT
        )
        out, _ = await asyncio.wait_for(promtool.communicate(text.encode()), 30)
        assert (promtool.returncode, out.decode()) == (0, "")


class TestOtlp:
    """What the OTLP export calls the same series."""

    async def test_dotted_names_units_and_attributes(self, otel: Served) -> None:
        """The conventions' instrument names and attribute keys; the status code is an int; error.type
        only where the request failed; unit s, By and {request}."""
        await otel.client.get("/items/1", headers={"x-test-trace-id": TRACE})
        await otel.client.get("/boom")
        settings = load_settings(**OTEL, metrics_exporter=("otlp",), otlp_endpoint=f"http://127.0.0.1:{free_port()}")
        request = OtlpMetrics(otel.registry, settings).collect()
        metrics: dict[str, Metric] = {
            m.name: m for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        }
        duration = metrics["http.server.request.duration"]
        assert duration.unit == "s"
        points = {attributes(p.attributes)["http.route"]: p for p in duration.histogram.data_points}
        assert attributes(points["/items/{item_id}"].attributes) == {
            "http.request.method": "GET",
            "http.route": "/items/{item_id}",
            "http.response.status_code": 200,
            "url.scheme": "http",
        }
        assert [e.trace_id.hex() for e in points["/items/{item_id}"].exemplars] == [TRACE]
        assert attributes(points["/boom"].attributes)["error.type"] == "500"
        assert metrics["http.server.active_requests"].unit == "{request}"
        assert {m.unit for n, m in metrics.items() if n.endswith("body.size")} == {"By"}
        [exception] = metrics["http_exceptions_total"].sum.data_points
        assert attributes(exception.attributes) == {
            "http.request.method": "GET",
            "http.route": "/boom",
            "error.type": "LookupError",
        }
        assert not any(name.startswith("http_request") for name in metrics)
        assert "opskit_build_info" in metrics
