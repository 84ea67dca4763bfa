"""The dashboards do not lie: every panel and rule, evaluated by a real Prometheus scraping live metrics.

The scrape target is the stand-in exporter (tests/grafana/standin.py: the exported metric names
under mixed traffic), once per naming (OPSKIT_METRICS_NAMING), each with its own dashboards and
rules. To check against the demo app instead, start it under gunicorn and pass its address as the
Prometheus target: `scraped` is the only thing to change (tests/grafana/test_dashboards_demo.py does).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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
from tests.grafana.standin import StandInExporter
from tests.prometheus.exported_metrics import KUBERNETES_ONLY
from tests.prometheus.server import PrometheusServer, prometheus_server

TARGET_LABELS = {"namespace": "local", "service": "opskit-demo", "pod": "demo-0"}
# A failed request counted, in each naming's words.
FAILED = {
    "prometheus": 'rate(http_requests_total{status="500"}[15s]) > 0',
    "otel": 'rate(http_server_request_duration_seconds_count{http_response_status_code="500"}[15s]) > 0',
}
DASHBOARD_NAMES = [path.name for path in dashboard_files()]


def _needs_data(query: Query) -> bool:
    """Everything must show data, except what only a Kubernetes cluster's exporters provide."""
    return not query.metric_names() & set(KUBERNETES_ONLY)


@dataclass(frozen=True)
class Scraped:
    """A Prometheus scraping one naming's metrics, with that naming's rules."""

    prometheus: PrometheusServer
    naming: Naming


@pytest.fixture(scope="module", params=NAMINGS)
def scraped(request: pytest.FixtureRequest) -> Iterator[Scraped]:
    """A Prometheus scraping live opskit metrics every second, with opskit's rules loaded."""
    naming: Naming = request.param
    with (
        StandInExporter(naming=naming) as exporter,
        prometheus_server(
            targets=[exporter.target], target_labels=TARGET_LABELS, rule_files=rule_files(naming)
        ) as prom,
    ):
        prom.wait_for(FAILED[naming])
        prom.wait_for("opskit:http_request_errors:ratio_rate5m > 0")
        prom.wait_for("opskit:http_request_slow:ratio_rate5m > 0")
        yield Scraped(prom, naming)


def _dashboard(scraped: Scraped, name: str) -> Path:
    (path,) = [path for path in dashboard_files(scraped.naming) if path.name == name]
    return path


@pytest.mark.slow
class TestDashboardsOnLiveMetrics:
    """Panels, variables and rules return data from a real scrape, in either naming."""

    def test_each_naming_has_every_dashboard(self) -> None:
        """The otel set holds a dashboard for each hand-written one."""
        assert [path.name for path in dashboard_files("otel")] == DASHBOARD_NAMES
        assert [path.name for path in rule_files("otel")] == [path.name for path in rule_files()]

    @pytest.mark.parametrize("name", DASHBOARD_NAMES)
    def test_every_panel_has_data(self, scraped: Scraped, name: str) -> None:
        """Each panel target, with "All" selected, is valid and returns series."""
        queries = panel_queries(_dashboard(scraped, name))
        assert queries
        assert evaluate(scraped.prometheus, queries, needs_data=_needs_data) == []

    @pytest.mark.parametrize("name", DASHBOARD_NAMES)
    def test_every_variable_has_values(self, scraped: Scraped, name: str) -> None:
        """namespace, service, pod (and route, method) list the scraped values."""
        queries = variable_queries(_dashboard(scraped, name))
        assert evaluate(scraped.prometheus, queries, needs_data=lambda query: True) == []

    def test_variables_select_the_target_labels(self, scraped: Scraped) -> None:
        """The service variable lists the Kubernetes service (the target label), not the app's own label."""
        (series,) = scraped.prometheus.query("group by (namespace, service, pod) (opskit_build_info)")
        assert series["metric"] == TARGET_LABELS

    def test_panels_filter_by_the_chosen_service(self, scraped: Scraped) -> None:
        """Choosing another service empties the panels: the filter is real, and the check can fail."""
        queries = panel_queries(dashboard_files(scraped.naming)[0])
        problems = evaluate(scraped.prometheus, queries, needs_data=_needs_data, values={"service": "another-service"})
        assert len(problems) == len([q for q in queries if _needs_data(q)]) > 10

    def test_rules_are_healthy_and_recordings_have_data(self, scraped: Scraped) -> None:
        """Prometheus evaluates every rule without error; every recording rule yields series."""
        files = rule_files(scraped.naming)
        rules = [rule for group in scraped.prometheus.rule_groups() for rule in group["rules"]]
        assert len(rules) == sum(len(rule_queries(path)) for path in files)
        assert [r["name"] for r in rules if r["health"] != "ok"] == []
        queries = [q for path in files for q in rule_queries(path)]
        recordings = [Query(f"recorded {name}", name) for name in sorted(recorded_names(scraped.naming))]
        assert len(recordings) == 14
        assert evaluate(scraped.prometheus, queries) == []
        assert evaluate(scraped.prometheus, recordings, needs_data=lambda query: True) == []

    def test_mixed_traffic_shows_in_the_slo_ratios(self, scraped: Scraped) -> None:
        """One request in four fails and one in four is slow: the recorded ratios say so."""
        (errors,) = scraped.prometheus.query('opskit:http_request_errors:ratio_rate5m{service="opskit-demo"}')
        (slow,) = scraped.prometheus.query('opskit:http_request_slow:ratio_rate5m{service="opskit-demo"}')
        assert float(errors["value"][1]) == pytest.approx(0.25, abs=0.05)
        assert float(slow["value"][1]) == pytest.approx(0.25, abs=0.05)
