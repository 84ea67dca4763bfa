"""The dashboards do not lie: every panel and rule, evaluated by a real Prometheus scraping live metrics.

The scrape target is the stand-in exporter (tests/grafana/standin.py: the exported metric names
under mixed traffic). To check against the demo app instead, start it under gunicorn and pass its
address as the Prometheus target: `scraped` is the only thing to change.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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


def _needs_data(query: Query) -> bool:
    """Everything must show data, except what only a Kubernetes cluster's exporters provide."""
    return not query.metric_names() & set(KUBERNETES_ONLY)


@pytest.fixture(scope="module")
def scraped() -> Iterator[PrometheusServer]:
    """A Prometheus scraping live opskit metrics every second, with opskit's rules loaded."""
    with (
        StandInExporter() as exporter,
        prometheus_server(targets=[exporter.target], target_labels=TARGET_LABELS, rule_files=rule_files()) as prom,
    ):
        prom.wait_for('rate(http_requests_total{status="500"}[15s]) > 0')
        prom.wait_for("opskit:http_request_errors:ratio_rate5m > 0")
        prom.wait_for("opskit:http_request_slow:ratio_rate5m > 0")
        yield prom


@pytest.mark.slow
class TestDashboardsOnLiveMetrics:
    """Panels, variables and rules return data from a real scrape."""

    @pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
    def test_every_panel_has_data(self, scraped: PrometheusServer, path: Path) -> None:
        """Each panel target, with "All" selected, is valid and returns series."""
        queries = panel_queries(path)
        assert queries
        assert evaluate(scraped, queries, needs_data=_needs_data) == []

    @pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
    def test_every_variable_has_values(self, scraped: PrometheusServer, path: Path) -> None:
        """namespace, service, pod (and route, method) list the scraped values."""
        assert evaluate(scraped, variable_queries(path), needs_data=lambda query: True) == []

    def test_variables_select_the_target_labels(self, scraped: PrometheusServer) -> None:
        """The service variable lists the Kubernetes service (the target label), not the app's own label."""
        (series,) = scraped.query("group by (namespace, service, pod) (opskit_build_info)")
        assert series["metric"] == TARGET_LABELS

    def test_panels_filter_by_the_chosen_service(self, scraped: PrometheusServer) -> None:
        """Choosing another service empties the panels: the filter is real, and the check can fail."""
        queries = panel_queries(dashboard_files()[0])
        problems = evaluate(scraped, queries, needs_data=_needs_data, values={"service": "another-service"})
        assert len(problems) == len([q for q in queries if _needs_data(q)]) > 10

    def test_rules_are_healthy_and_recordings_have_data(self, scraped: PrometheusServer) -> None:
        """Prometheus evaluates every rule without error; every recording rule yields series."""
        rules = [rule for group in scraped.rule_groups() for rule in group["rules"]]
        assert len(rules) == sum(len(rule_queries(path)) for path in rule_files())
        assert [r["name"] for r in rules if r["health"] != "ok"] == []
        queries = [q for path in rule_files() for q in rule_queries(path)]
        recordings = [Query(f"recorded {name}", name) for name in sorted(recorded_names())]
        assert len(recordings) == 14
        assert evaluate(scraped, queries) == []
        assert evaluate(scraped, recordings, needs_data=lambda query: True) == []

    def test_mixed_traffic_shows_in_the_slo_ratios(self, scraped: PrometheusServer) -> None:
        """One request in four fails and one in four is slow: the recorded ratios say so."""
        (errors,) = scraped.query('opskit:http_request_errors:ratio_rate5m{service="opskit-demo"}')
        (slow,) = scraped.query('opskit:http_request_slow:ratio_rate5m{service="opskit-demo"}')
        assert float(errors["value"][1]) == pytest.approx(0.25, abs=0.05)
        assert float(slow["value"][1]) == pytest.approx(0.25, abs=0.05)
