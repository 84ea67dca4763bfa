"""The otel dashboards, rules and adapter values are what scripts/gen_naming.py makes of the hand-written ones."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.servers import ROOT

SCRIPT = ROOT / "scripts" / "gen_naming.py"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_naming", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATOR = _generator()
OUTPUTS: dict[Path, str] = GENERATOR.outputs()


def translate(expr: str) -> str:
    result: str = GENERATOR.translate(expr)
    return result


class TestGeneratedFiles:
    @pytest.mark.parametrize("path", sorted(OUTPUTS), ids=lambda p: str(p.relative_to(ROOT)))
    def test_committed_file_is_the_generated_one(self, path: Path) -> None:
        """Each otel/ file equals what the generator writes now (run `python scripts/gen_naming.py`)."""
        assert path.exists() and path.read_text() == OUTPUTS[path]

    def test_every_source_has_its_otel_file(self) -> None:
        """Dashboards, rule files, promtool tests and adapter values each have a generated twin."""
        folders = {path.parent.relative_to(ROOT).as_posix() for path in OUTPUTS}
        assert folders == {
            "grafana/dashboards-otel",
            "prometheus/rules/otel",
            "prometheus/tests/otel",
            "helm/opskit/adapter/otel",
        }
        for path in OUTPUTS:
            source = path.parent.parent if path.parent.name == "otel" else ROOT / "grafana" / "dashboards"
            assert (source / path.name).exists()

    def test_trace_links_read_the_otel_route_label(self) -> None:
        """The route dashboard's link from a latency series to its traces takes the route from http_route."""
        text = OUTPUTS[ROOT / "grafana" / "dashboards-otel" / "opskit-route.json"]
        assert "__field.labels.http_route" in text and "__field.labels.route}" not in text

    def test_check_mode_passes_on_the_repository(self) -> None:
        """`--check` (what CI would run) finds nothing stale."""
        result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, cwd=ROOT)
        assert result.returncode == 0, result.stderr


class TestTranslation:
    """How PromQL of the Prometheus naming reads in the otel naming."""

    def test_requests_are_the_duration_count(self) -> None:
        """http_requests_total becomes the duration histogram's _count, with the conventions' labels."""
        expr = 'sum by (route, status) (rate(http_requests_total{status=~"5..", route=~"$route"}[5m]))'
        assert translate(expr) == (
            "sum by (http_route, http_response_status_code) (rate(http_server_request_duration_seconds_count"
            '{http_response_status_code=~"5..", http_route=~"$route"}[5m]))'
        )

    def test_histograms_keep_le(self) -> None:
        """Bucket series are renamed; le and the target labels stay."""
        expr = (
            'histogram_quantile(0.99, sum by (le, pod) (rate(http_request_duration_seconds_bucket{namespace="a"}[1m])))'
        )
        assert translate(expr) == (
            "histogram_quantile(0.99, sum by (le, pod) "
            '(rate(http_server_request_duration_seconds_bucket{namespace="a"}[1m])))'
        )

    def test_labels_of_other_metrics_are_left_alone(self) -> None:
        """The route label of the event-loop metric is not an HTTP family's: it keeps its name."""
        expr = 'sum by (route) (rate(opskit_event_loop_blocked_total{route="/x"}[5m]))'
        assert translate(expr) == expr

    def test_a_trailing_grouping_reads_the_expression_before_it(self) -> None:
        """`sum(...) by (method)` renames by the series inside the sum."""
        expr = "sum(rate(http_requests_total[5m])) by (method)"
        assert translate(expr) == "sum(rate(http_server_request_duration_seconds_count[5m])) by (http_request_method)"

    def test_a_label_the_family_lacks_is_dropped(self) -> None:
        """Requests in flight have no route in the conventions: its matcher and grouping go."""
        expr = 'sum by (route) (http_requests_in_progress{pod=~"$pod", route=~"$route", method=~"$method"})'
        assert translate(expr) == 'sum(http_server_active_requests{pod=~"$pod", http_request_method=~"$method"})'

    def test_matching_on_http_labels_is_refused(self) -> None:
        """A vector match on HTTP labels has no safe translation: the generator stops instead of guessing."""
        with pytest.raises(ValueError, match="on"):
            translate("http_requests_total / on (route) http_request_duration_seconds_count")

    def test_legends_and_variables(self) -> None:
        """Legend placeholders and label_values() variables follow the renamed labels."""
        labels = GENERATOR.labels_of("sum by (route, status) (rate(http_requests_total[1m]))")
        assert GENERATOR.legend("{{route}} {{status}}", labels) == "{{http_route}} {{http_response_status_code}}"
        query = 'label_values(http_requests_total{route=~"$route"}, method)'
        assert GENERATOR.variable_query(query) == (
            'label_values(http_server_request_duration_seconds_count{http_route=~"$route"}, http_request_method)'
        )
