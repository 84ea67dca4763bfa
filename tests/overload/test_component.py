"""The overload component's hooks: the gate and its release, queue time behind proxies, readiness, hook choice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient
from structlog.testing import capture_logs

import opskit
from opskit import health
from opskit.component import Component, overrides
from opskit.exchange import Exchange
from opskit.instrument import build_components
from opskit.load import load_readings
from opskit.metrics.exposition import render
from opskit.metrics.registry import Registry
from opskit.overload import (
    OverloadComponent,
    OverloadMetrics,
    QueueTimeComponent,
    QueueTimeSheddingComponent,
    Saturation,
    SheddingComponent,
    create_component,
)
from opskit.ratelimit.component import RateLimitComponent
from opskit.runtime import Runtime
from opskit.settings import load_settings

PER_REQUEST = ("request_started", "admit", "response_started", "request_finished", "request_closed")


@pytest.fixture
def registry() -> Iterator[Registry]:
    r = Registry(None)
    yield r
    r.close()


def value(registry: Registry, name: str, **labels: str) -> float:
    text = render(registry.collect(), openmetrics=False).decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return 0.0


def runtime(**settings: Any) -> Runtime:
    return Runtime(load_settings(**settings))


def exchange(rt: Runtime, path: str = "/work", *headers: tuple[bytes, bytes], peer: str = "10.0.0.1") -> Exchange:
    scope = {"type": "http", "method": "GET", "path": path, "headers": list(headers), "client": (peer, 5000)}
    return Exchange(scope, rt)


async def answer(app: Any) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http"}, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


class TestShedding:
    def test_beyond_the_cap_an_immediate_503_with_retry_after(self, registry: Registry) -> None:
        """At a cap of 2 the third request is answered 503 with Retry-After, counted and annotated; a
        finished request frees its slot."""
        rt = runtime(max_in_flight=2, overload_retry_after=3)
        component = SheddingComponent(rt, OverloadMetrics(registry))
        first, second, third = exchange(rt), exchange(rt), exchange(rt)
        assert asyncio.run(component.admit(first)) is None
        assert asyncio.run(component.admit(second)) is None
        refusal = asyncio.run(component.admit(third))
        assert refusal is not None
        status, headers, body = asyncio.run(answer(refusal))
        assert (status, headers[b"retry-after"]) == (503, b"3")
        assert orjson.loads(body) == {"detail": "Service overloaded, retry later"}
        assert third.annotations == {"shed": "max_in_flight"}
        assert value(registry, "opskit_requests_shed_total", reason="max_in_flight") == 1
        component.request_closed(third)  # a shed request holds no slot
        assert component.in_flight == 2
        component.request_closed(first)
        assert component.in_flight == 1
        assert asyncio.run(component.admit(exchange(rt))) is None

    def test_shedding_is_logged_at_a_bounded_rate(self, registry: Registry) -> None:
        """A storm of shed requests writes one warning (with the cap), not one line each."""
        rt = runtime(max_in_flight=1)
        component = SheddingComponent(rt, OverloadMetrics(registry))
        asyncio.run(component.admit(exchange(rt)))
        with capture_logs() as logs:
            for _ in range(50):
                assert asyncio.run(component.admit(exchange(rt))) is not None
        lines = [e for e in logs if e["event"].startswith("shedding requests")]
        assert len(lines) == 1
        assert lines[0]["cap"] == 1 and lines[0]["log_level"] == "warning"
        assert value(registry, "opskit_requests_shed_total", reason="max_in_flight") == 50

    def test_probe_and_metrics_paths_are_never_shed(self, registry: Registry) -> None:
        """Even served by the app itself (health feature off), the probe and metrics paths pass a full worker."""
        rt = runtime(max_in_flight=1, health_enabled=False)
        component = SheddingComponent(rt, OverloadMetrics(registry))
        assert asyncio.run(component.admit(exchange(rt))) is None
        for path in ("/healthz", "/readyz", "/metrics"):
            assert asyncio.run(component.admit(exchange(rt, path))) is None, path
        assert asyncio.run(component.admit(exchange(rt, "/work"))) is not None

    def test_auto_learns_from_successful_requests_only(self, registry: Registry) -> None:
        """With ``auto`` the reason is ``adaptive_limit``; failed and abandoned requests teach the limiter nothing."""
        rt = runtime(max_in_flight="auto")
        component = SheddingComponent(rt, OverloadMetrics(registry))
        assert component.reason == "adaptive_limit"
        limit: Any = component.limit
        failed, left, fine = exchange(rt), exchange(rt), exchange(rt)
        failed.status, left.status, left.disconnected, fine.status = 500, 200, True, 200
        for ex in (failed, left):  # each finds the worker empty: would be the baseline if measured
            asyncio.run(component.admit(ex))
            component.request_closed(ex)
        assert limit.baseline is None
        asyncio.run(component.admit(fine))
        component.request_closed(fine)
        assert limit.baseline is not None
        assert component.in_flight == 0


class TestQueueTime:
    def app(self, **settings: Any) -> FastAPI:
        app = FastAPI()

        @app.get("/work")
        async def work() -> dict[str, bool]:
            return {"ok": True}

        return opskit.instrument(app, **settings)

    def test_believed_from_a_trusted_proxy_only(self) -> None:
        """A stamp through a trusted proxy (also once it forwarded the client) is a queue time; the same
        header from any other peer is ignored."""
        registry = opskit.runtime.current().registry
        before = value(registry, "http_request_queue_seconds_count")
        fast = value(registry, "http_request_queue_seconds_bucket", le="0.25")
        slow = value(registry, "http_request_queue_seconds_bucket", le="2.5")
        stamp = f"t={time.time() - 0.5:.3f}"
        app = self.app(trusted_proxies=("10.0.0.0/8",))
        with TestClient(app, client=("10.0.0.7", 4000)) as client:
            client.get("/work", headers={"X-Request-Start": stamp})
            client.get("/work", headers={"X-Request-Start": stamp, "X-Forwarded-For": "203.0.113.5"})
        registry = opskit.runtime.current().registry
        assert value(registry, "http_request_queue_seconds_count") == before + 2
        # Both waited about half a second.
        assert value(registry, "http_request_queue_seconds_bucket", le="0.25") == fast
        assert value(registry, "http_request_queue_seconds_bucket", le="2.5") == slow + 2
        with TestClient(self.app(trusted_proxies=("10.0.0.0/8",)), client=("203.0.113.9", 4000)) as client:
            client.get("/work", headers={"X-Request-Start": stamp})
        assert value(registry, "http_request_queue_seconds_count") == before + 2

    def test_hostile_values_are_counted_not_recorded(self) -> None:
        """Garbage, a stamp in the future and one from yesterday each count as ignored, by reason."""
        registry = opskit.runtime.current().registry
        reasons = ("malformed", "negative", "too_large")
        before = {r: value(registry, "opskit_request_queue_time_ignored_total", reason=r) for r in reasons}
        count = value(registry, "http_request_queue_seconds_count")
        with TestClient(self.app(trusted_proxies=("127.0.0.1",)), client=("127.0.0.1", 4000)) as client:
            for stamp in ("t=<script>", "x" * 5000, f"t={time.time() + 60:.3f}", f"{(time.time() - 86400) * 1e6:.0f}"):
                assert client.get("/work", headers={"X-Request-Start": stamp}).status_code == 200
        registry = opskit.runtime.current().registry
        after = {r: value(registry, "opskit_request_queue_time_ignored_total", reason=r) for r in reasons}
        assert {r: after[r] - before[r] for r in reasons} == {"malformed": 2, "negative": 1, "too_large": 1}
        assert value(registry, "http_request_queue_seconds_count") == count


class TestHooks:
    @pytest.mark.parametrize(
        ("settings", "kind"),
        [
            ({}, OverloadComponent),
            ({"trusted_proxies": ("10.0.0.0/8",)}, QueueTimeComponent),
            ({"trusted_proxies": ("10.0.0.0/8",), "queue_time_header": ""}, OverloadComponent),
            ({"max_in_flight": 5}, SheddingComponent),
            ({"max_in_flight": "auto", "trusted_proxies": ("10.0.0.0/8",)}, QueueTimeSheddingComponent),
        ],
    )
    def test_only_the_hooks_the_settings_need(self, settings: dict[str, Any], kind: type[OverloadComponent]) -> None:
        """Without a cap or a trusted proxy the component has no per-request hook (the middleware keeps its
        lean path); queue time adds request_started, the cap admit and request_closed."""
        component = create_component(runtime(**settings))
        assert type(component) is kind
        hooks = {h for h in PER_REQUEST if overrides(component, h)}
        expected = set()
        if issubclass(kind, QueueTimeComponent):
            expected.add("request_started")
        if issubclass(kind, SheddingComponent):
            expected |= {"admit", "request_closed"}
        assert hooks == expected

    def test_the_gauge_alone_keeps_the_lean_path(self) -> None:
        """Request IDs plus the default overload feature (no cap, no proxy): the middleware still skips the Exchange."""
        from opskit.middleware import OpskitMiddleware

        app = FastAPI()
        off = {f"{f}_enabled": False for f in ("logging", "metrics", "tracing", "ratelimit", "runtime")}
        stack = opskit.instrument(app, **off).build_middleware_stack()
        assert isinstance(stack, OpskitMiddleware)
        assert any(isinstance(c, OverloadComponent) for c in stack.components)
        assert stack._lean
        capped = opskit.instrument(FastAPI(), **off, max_in_flight=5).build_middleware_stack()
        assert isinstance(capped, OpskitMiddleware) and not capped._lean

    def test_switched_off(self) -> None:
        assert create_component(runtime(overload_enabled=False)) is None

    def test_the_cap_gates_before_the_rate_limiter(self) -> None:
        """A shed request costs no rate-limit check: the overload gate comes first."""
        components = build_components(runtime(max_in_flight=5, rate_limit="10/second"))
        kinds = [type(c) for c in components]
        gates = [k for k in kinds if k.admit is not Component.admit]
        assert gates[0] is SheddingComponent
        assert any(issubclass(k, RateLimitComponent) for k in gates[1:])


class TestSaturation:
    def test_the_largest_term_is_the_signal(self) -> None:
        """max(in-flight over cap, pool busy share, loop busy share); a term not measured does not count."""
        rt = runtime()
        readings = load_readings(rt)
        saturation = Saturation(readings)
        assert saturation.sample(0.0, 3, None) == 0.0
        assert saturation.sample(0.0, 3, 10) == pytest.approx(0.3)
        readings.pool_busy, readings.pool_size = 20, 40
        readings.loop_busy = 0.1
        assert Saturation(readings).sample(0.0, 3, 10) == pytest.approx(0.5)
        readings.loop_busy = 0.9
        assert Saturation(readings).sample(0.0, 30, None) == pytest.approx(0.9)
        assert Saturation(readings).sample(0.0, 30, 10) == 1.0

    def test_terms_are_smoothed_over_about_a_second(self) -> None:
        """A jump from idle to a full cap shows as about 63 % after a second, most of it after three."""
        saturation = Saturation(load_readings(runtime()))
        saturation.sample(0.0, 0, 10)
        assert saturation.sample(1.0, 10, 10) == pytest.approx(1 - 2.718281828**-1)
        assert saturation.sample(3.0, 10, 10) > 0.95

    def test_readiness_fails_while_saturated(self, registry: Registry) -> None:
        """With ``OPSKIT_READINESS_MAX_SATURATION`` set, /readyz is 503 at or above it, 200 below; the check
        goes away at shutdown."""
        component = OverloadComponent(runtime(readiness_max_saturation=0.8), OverloadMetrics(registry))

        async def scenario() -> list[int]:
            await component.startup()
            statuses = [(await health.readiness(1.0))[0]]
            component.saturation.value = 0.85
            statuses.append((await health.readiness(1.0))[0])
            await component.shutdown()
            statuses.append((await health.readiness(1.0))[0])
            return statuses

        assert asyncio.run(scenario()) == [200, 503, 200]

    def test_gauges_are_sampled_by_a_timer(self, registry: Registry) -> None:
        """Started on a loop, the component sets the saturation, in-flight and cap gauges without any request."""
        rt = runtime(max_in_flight=4)
        component = SheddingComponent(rt, OverloadMetrics(registry))

        async def scenario() -> None:
            await component.startup()
            await component.admit(exchange(rt))
            await asyncio.sleep(0.6)
            await component.shutdown()

        asyncio.run(scenario())
        assert value(registry, "opskit_in_flight_requests") == 1
        assert value(registry, "opskit_in_flight_limit") == 4
        assert 0 < value(registry, "opskit_saturation") <= 0.25
