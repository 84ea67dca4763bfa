"""The Grafana dashboards: well-formed, portable (datasource variables, no fixed UIDs), valid PromQL.

Both sets are checked: the hand-written one and the one generated for OPSKIT_METRICS_NAMING=otel.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opskit.metrics.naming import NAMINGS, Naming
from tests.grafana.dashboards import (
    Query,
    dashboard_files,
    evaluate,
    load_dashboard,
    panel_queries,
    panels,
    recorded_names,
    variable_queries,
)
from tests.prometheus.exported_metrics import EXTERNAL, exported_series
from tests.prometheus.server import PrometheusServer, prometheus_server

DASHBOARDS = [path for naming in NAMINGS for path in dashboard_files(naming)]
NAMING_OF: dict[Path, Naming] = {path: naming for naming in NAMINGS for path in dashboard_files(naming)}
DURATION_BUCKETS = {
    "prometheus": "http_request_duration_seconds_bucket",
    "otel": "http_server_request_duration_seconds_bucket",
}
DATASOURCE_UIDS = {"${datasource}", "${traces}"}
EXPECTED = {"opskit-overview.json", "opskit-route.json", "opskit-scaling.json"}


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _walk(item, f"{path}[{i}]")


@pytest.fixture(scope="module")
def empty_prometheus() -> Iterator[PrometheusServer]:
    """A Prometheus with an empty TSDB: a query on it checks the syntax and the functions."""
    with prometheus_server() as server:
        yield server


class TestDashboardFiles:
    """Each dashboard file, as Grafana's provisioning and sidecar read it."""

    @pytest.mark.parametrize("naming", NAMINGS)
    def test_the_three_dashboards_exist(self, naming: Naming) -> None:
        """Overview, route drill-down and scaling dashboards are shipped, in each naming."""
        assert {path.name for path in dashboard_files(naming)} == EXPECTED

    @pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: f"{NAMING_OF[p]}-{p.name}")
    def test_identity(self, path: Path) -> None:
        """A fixed uid (stable links), a title, the opskit tag and a current schema version."""
        dashboard = load_dashboard(path)
        assert dashboard["uid"] == path.stem
        assert dashboard["title"].startswith("opskit / ")
        assert "opskit" in dashboard["tags"]
        assert dashboard["schemaVersion"] >= 36
        assert dashboard.get("id") is None

    @pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: f"{NAMING_OF[p]}-{p.name}")
    def test_template_variables(self, path: Path) -> None:
        """datasource and traces pick a datasource; namespace, service and pod filter, with All."""
        variables = {v["name"]: v for v in load_dashboard(path)["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        assert variables["traces"]["type"] == "datasource"
        assert variables["traces"]["query"] == "tempo"
        for name in ("namespace", "service", "pod"):
            assert variables[name]["type"] == "query"
            assert variables[name]["datasource"]["uid"] == "${datasource}"
            assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"

    @pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: f"{NAMING_OF[p]}-{p.name}")
    def test_every_panel_uses_the_datasource_variable(self, path: Path) -> None:
        """Every panel and every target queries ${datasource}, never a fixed datasource."""
        for panel in panels(load_dashboard(path)):
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]

    @pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: f"{NAMING_OF[p]}-{p.name}")
    def test_no_hard_coded_uids(self, path: Path) -> None:
        """The only uid values are the dashboard's own and the datasource variables."""
        dashboard = load_dashboard(path)
        for where, key, value in _walk(dashboard):
            if key == "uid" and where:
                assert value in DATASOURCE_UIDS, f"{where}.uid = {value!r}"
            if key == "datasource" and isinstance(value, str):
                pytest.fail(f"{where}: datasource given by name {value!r}")

    @pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: f"{NAMING_OF[p]}-{p.name}")
    def test_rates_use_rate_interval(self, path: Path) -> None:
        """Every range in a panel is $__rate_interval, so the panel follows the scrape interval."""
        for query in panel_queries(path):
            for window in query.ranges():
                assert window == "$__rate_interval", f"{query.source}: [{window}]"

    @pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: f"{NAMING_OF[p]}-{p.name}")
    def test_panels_select_pods_of_the_chosen_service(self, path: Path) -> None:
        """Every opskit series a panel selects is filtered by the namespace and service variables."""
        for query in panel_queries(path):
            if query.metric_names() & exported_series(NAMING_OF[path]):
                assert 'namespace=~"$namespace"' in query.expr, query.source
                assert 'service=~"$service"' in query.expr, query.source

    @pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: f"{NAMING_OF[p]}-{p.name}")
    def test_only_known_metrics(self, path: Path) -> None:
        """Panels read only metrics opskit exports, its recording rules, and the listed external ones."""
        known = exported_series(NAMING_OF[path]) | recorded_names(NAMING_OF[path]) | set(EXTERNAL)
        for query in [*panel_queries(path), *variable_queries(path)]:
            assert query.metric_names(), f"{query.source}: no selector found in {query.expr!r}"
            unknown = query.metric_names() - known
            assert not unknown, f"{query.source}: unknown metrics {sorted(unknown)}"

    @pytest.mark.parametrize("naming", NAMINGS)
    def test_latency_panels_show_exemplars(self, naming: Naming) -> None:
        """Latency panels ask for exemplars, and the route dashboard links a route's latency to its traces."""
        latency_targets = [
            (path.name, panel, target)
            for path in dashboard_files(naming)
            for panel in panels(load_dashboard(path))
            for target in panel.get("targets", [])
            if DURATION_BUCKETS[naming] in target["expr"] and panel["type"] == "timeseries"
        ]
        assert latency_targets
        assert any(target["exemplar"] for _, _, target in latency_targets)
        route = load_dashboard(next(path for path in dashboard_files(naming) if path.name == "opskit-route.json"))
        defaults = [panel.get("fieldConfig", {}).get("defaults", {}) for panel in panels(route)]
        links = [link for default in defaults for link in default.get("links", [])]
        assert links and all("${traces}" in link["url"] for link in links)


@pytest.mark.slow
class TestDashboardQueries:
    """Every PromQL expression of every dashboard is valid for a real Prometheus."""

    def test_every_expression_parses(self, empty_prometheus: PrometheusServer) -> None:
        """Panels and variable queries, variables substituted, are accepted by the query API."""
        queries = [q for path in DASHBOARDS for q in (*panel_queries(path), *variable_queries(path))]
        assert len(queries) > 80
        assert evaluate(empty_prometheus, queries) == []

    def test_an_invalid_expression_is_reported(self, empty_prometheus: PrometheusServer) -> None:
        """The check itself can fail: a broken expression comes back as a problem."""
        broken = Query("broken", 'sum(rate(http_requests_total{service=~"$service"}[$__rate_interval])')
        problems = evaluate(empty_prometheus, [broken])
        assert len(problems) == 1 and "invalid" in problems[0]
