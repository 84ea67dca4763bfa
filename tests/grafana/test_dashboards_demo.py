"""The dashboards do not lie about the demo app: real gunicorn workers, mixed traffic, a real Prometheus.

The demo service (examples/demo.py) runs under `opskit serve` with 2 workers and a Redis-backed global
rate limit; the test sends ok, not-found, failing, slow and rate-limited requests, lets Prometheus
scrape the app, then evaluates every dashboard panel, variable and rule through the query API. It runs
once per naming (OPSKIT_METRICS_NAMING), each with its own set of dashboards and rules.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from opskit.metrics.naming import NAMINGS, Naming
from tests.grafana.dashboards import (
    Query,
    dashboard_files,
    evaluate,
    panel_queries,
    recorded_names,
    rule_files,
    rule_queries,
    variable_queries,
)
from tests.prometheus.exported_metrics import KUBERNETES_ONLY, TRACE_EXPORT
from tests.prometheus.server import PrometheusServer, prometheus_server
from tests.servers import ROOT, SCRIPTS, Background, RedisServer, free_port, wait_for_port

TARGET_LABELS = {"namespace": "demo", "service": "opskit-demo", "pod": "demo-0"}
# Series the demo cannot produce here: the cluster's exporters, limiter errors while Redis is healthy, and
# trace export counters (the demo exports no spans).
NO_DATA_HERE = {*KUBERNETES_ONLY, "opskit_ratelimit_backend_errors_total", *TRACE_EXPORT}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in ("opskit.cli", "opskit.metrics", "opskit.ratelimit"))
        or not (ROOT / "examples" / "demo.py").exists(),
        reason="needs the serving, metrics and rate-limit features and the demo app",
    ),
]


def _needs_data(query: Query) -> bool:
    return not query.metric_names() & NO_DATA_HERE


def _wait_healthy(base: str, timeout: float = 30.0) -> None:
    """Gunicorn binds the port before its workers answer: poll /healthz."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{base}/healthz did not answer 200 within {timeout}s")
        time.sleep(0.1)


def _drive(base: str, seconds: float) -> set[int]:
    """Mixed traffic for ``seconds``: the statuses seen (bounded: at most a few hundred requests)."""
    statuses: set[int] = set()
    paths = ["/items/1", "/items/2", "/items/999", "/error", "/limited", "/"]
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=base, timeout=10) as client, ThreadPoolExecutor(4) as pool:
        while time.monotonic() < deadline:
            statuses.add(client.get("/items/1", headers={"X-Request-Start": f"t={time.time() - 0.01:.3f}"}).status_code)
            slow = pool.submit(client.get, "/slow", params={"seconds": "0.6"})
            for path in paths * 5:
                # The server closes a connection whose request raised: /error gets a connection of its own.
                headers = {"connection": "close"} if path == "/error" else {}
                statuses.add(client.get(path, headers=headers).status_code)
            statuses.add(slow.result().status_code)
            statuses.add(client.get("/blocking").status_code)
            statuses.add(client.post("/items", json={"name": "lamp"}).status_code)  # a background task
            time.sleep(0.2)
    return statuses


DASHBOARD_NAMES = [path.name for path in dashboard_files()]
ROUTE_LABEL = {"prometheus": "route", "otel": "http_route"}
ROUTE_SERIES = {"prometheus": "http_requests_total", "otel": "http_server_request_duration_seconds_count"}


@dataclass(frozen=True)
class Scraped:
    """A Prometheus scraping the demo in one naming, with that naming's rules."""

    prometheus: PrometheusServer
    naming: Naming


@pytest.fixture(scope="module", params=NAMINGS)
def scraped_demo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    """The demo under traffic, scraped every second by a Prometheus with opskit's rules."""
    naming: Naming = request.param
    redis = RedisServer()
    port = free_port()
    env = {
        "WEB_CONCURRENCY": "2",
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path_factory.mktemp("metrics")),
        "OPSKIT_REDIS_URL": redis.url,
        "OPSKIT_RATE_LIMIT": "40/second burst=20",
        # A cap the traffic never reaches, and the test client as the trusted load balancer stamping queue time.
        "OPSKIT_MAX_IN_FLIGHT": "100",
        "OPSKIT_TRUSTED_PROXIES": "127.0.0.1",
        "OTEL_SERVICE_NAME": "opskit-demo",
        "OPSKIT_METRICS_NAMING": naming,
        "LOG_LEVEL": "warning",
    }
    app = Background([str(SCRIPTS / "opskit-asgi"), "serve", "examples.demo:app"], env=env, cwd=ROOT)
    try:
        wait_for_port(port, timeout=30)
        _wait_healthy(f"http://127.0.0.1:{port}")
        with prometheus_server(
            targets=[f"127.0.0.1:{port}"], target_labels=TARGET_LABELS, rule_files=rule_files(naming)
        ) as prom:
            prom.wait_for("up == 1")  # before the traffic: rates need samples from before and after it
            statuses = _drive(f"http://127.0.0.1:{port}", seconds=5)
            assert {200, 404, 429, 500} <= statuses, statuses
            prom.wait_for('opskit:http_request_errors:ratio_rate5m{service="opskit-demo"} > 0')
            prom.wait_for('opskit:http_request_slow:ratio_rate5m{service="opskit-demo"} > 0')
            prom.wait_for('rate(opskit_event_loop_blocked_total{route="/blocking"}[15s]) > 0')
            yield Scraped(prom, naming)
    finally:
        app.close()
        redis.close()


def _dashboard(scraped: Scraped, name: str) -> Path:
    (path,) = [path for path in dashboard_files(scraped.naming) if path.name == name]
    return path


class TestDashboardsOnTheDemo:
    """Every panel, variable and rule shows the demo's real traffic, in either naming."""

    @pytest.mark.parametrize("name", DASHBOARD_NAMES)
    def test_every_panel_has_data(self, scraped_demo: Scraped, name: str) -> None:
        """Each panel target is valid and returns series (cluster-only ones excepted)."""
        queries = panel_queries(_dashboard(scraped_demo, name))
        assert evaluate(scraped_demo.prometheus, queries, needs_data=_needs_data) == []

    @pytest.mark.parametrize("name", DASHBOARD_NAMES)
    def test_every_variable_has_values(self, scraped_demo: Scraped, name: str) -> None:
        """namespace, service, pod, route and method list the demo's values."""
        queries = variable_queries(_dashboard(scraped_demo, name))
        assert evaluate(scraped_demo.prometheus, queries, needs_data=lambda query: True) == []

    def test_routes_are_templates(self, scraped_demo: Scraped) -> None:
        """The route variable offers templates (/items/{item_id}), never raw paths."""
        label, series = ROUTE_LABEL[scraped_demo.naming], ROUTE_SERIES[scraped_demo.naming]
        routes = {s["metric"][label] for s in scraped_demo.prometheus.query(f"group by ({label}) ({series})")}
        assert "/items/{item_id}" in routes
        assert not {"/items/1", "/items/999"} & routes

    def test_rules_are_healthy_and_recordings_have_data(self, scraped_demo: Scraped) -> None:
        """Every rule evaluates without error; every recording rule yields series."""
        prometheus, files = scraped_demo.prometheus, rule_files(scraped_demo.naming)
        rules = [rule for group in prometheus.rule_groups() for rule in group["rules"]]
        assert [r["name"] for r in rules if r["health"] != "ok"] == []
        assert evaluate(prometheus, [q for path in files for q in rule_queries(path)]) == []
        recordings = [Query(f"recorded {name}", name) for name in sorted(recorded_names(scraped_demo.naming))]
        assert evaluate(prometheus, recordings, needs_data=lambda query: True) == []
