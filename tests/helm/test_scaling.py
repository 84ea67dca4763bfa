"""Scaling objects of the chart: KEDA's ScaledObject against its CRD, and the prometheus-adapter rule.

Their Prometheus queries are evaluated by a real Prometheus scraping the exported metrics, with the
target labels a ServiceMonitor scrape of the release gives them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import yaml

from tests.grafana.standin import StandInExporter
from tests.helm.chart import (
    CHART,
    NAMESPACE,
    RELEASE,
    HelmError,
    Manifest,
    container_env,
    find,
    helm,
    one,
    render,
    validate_custom_resource,
)
from tests.prometheus.server import PrometheusServer, prometheus_server

APP = f"{RELEASE}-opskit"
KEDA_VALUES = CHART / "ci" / "keda-values.yaml"
ADAPTER_VALUES = CHART / "adapter" / "prometheus-adapter-values.yaml"
#: The adapter values for OPSKIT_METRICS_NAMING=otel, generated from ADAPTER_VALUES (scripts/gen_naming.py).
ADAPTER_VALUES_OTEL = CHART / "adapter" / "otel" / "prometheus-adapter-values.yaml"
TARGET_LABELS = {"namespace": NAMESPACE, "service": APP, "pod": f"{APP}-0"}


def triggers(manifests: list[Manifest]) -> dict[str, Manifest]:
    return {t["name"]: t for t in one(manifests, "ScaledObject")["spec"]["triggers"]}


@pytest.fixture(scope="module")
def scraped() -> Iterator[PrometheusServer]:
    """A Prometheus scraping live exported metrics as the release's ServiceMonitor would label them."""
    with (
        StandInExporter() as exporter,
        prometheus_server(targets=[exporter.target], target_labels=TARGET_LABELS) as prom,
    ):
        prom.wait_for("rate(http_requests_total[15s]) > 0")
        yield prom


class TestScaledObject:
    def test_keda_scenario_renders_a_valid_scaled_object(self) -> None:
        """`helm template` with KEDA on: a ScaledObject valid against KEDA's CRD schema, targeting the
        Deployment, which leaves its replicas to it; no HPA of the chart's own."""
        manifests = render(KEDA_VALUES)
        scaled = one(manifests, "ScaledObject")
        validate_custom_resource(scaled)
        assert scaled["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": APP}
        assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (3, 30)
        assert "replicas" not in one(manifests, "Deployment")["spec"]
        assert not find(manifests, "HorizontalPodAutoscaler")
        assert find(manifests, "PodDisruptionBudget")
        by_name = triggers(manifests)
        assert set(by_name) == {"saturation", "queue-time"}
        assert by_name["saturation"]["metricType"] == "AverageValue"
        assert by_name["saturation"]["metadata"]["threshold"] == "0.6"
        assert by_name["queue-time"]["metricType"] == "Value"
        assert by_name["queue-time"]["metadata"]["threshold"] == "0.05"
        for trigger in by_name.values():
            assert trigger["type"] == "prometheus"
            assert trigger["metadata"]["serverAddress"] == "http://prometheus-operated.monitoring.svc:9090"

    def test_the_crd_schema_refuses_what_keda_refuses(self) -> None:
        """The schema can fail: a threshold that is a number (metadata is a map of strings), an unknown
        metric type and a misspelt field are rejected."""
        scaled = one(render(KEDA_VALUES), "ScaledObject")
        broken: list[tuple[str, Any]] = [
            ("threshold", 0.6),
            ("metricType", "Average"),
            ("minReplicas", 3),
        ]
        for field, value in broken:
            copy = yaml.safe_load(yaml.safe_dump(scaled))
            if field == "threshold":
                copy["spec"]["triggers"][0]["metadata"]["threshold"] = value
            elif field == "metricType":
                copy["spec"]["triggers"][0]["metricType"] = value
            else:
                copy["spec"][field] = value
            with pytest.raises(jsonschema.ValidationError):
                validate_custom_resource(copy)

    def test_saturation_only_by_default(self) -> None:
        """keda.enabled alone scales on saturation, with the chart's default target and bounds."""
        manifests = render(set_values=["keda.enabled=true"])
        validate_custom_resource(one(manifests, "ScaledObject"))
        assert set(triggers(manifests)) == {"saturation"}
        assert triggers(manifests)["saturation"]["metadata"]["threshold"] == "0.7"

    def test_without_the_api_nothing_is_rendered_and_replicas_stay(self) -> None:
        """A cluster without KEDA gets no ScaledObject and keeps replicaCount; the notes say why. force renders it."""
        manifests = render(set_values=["keda.enabled=true"], api_versions=())
        assert not find(manifests, "ScaledObject")
        assert one(manifests, "Deployment")["spec"]["replicas"] == 2
        notes = helm("install", "x", CHART, "--dry-run=client", "--set", "keda.enabled=true")
        assert "no\nScaledObject was created" in notes
        forced = render(set_values=["keda.enabled=true", "keda.force=true"], api_versions=())
        assert find(forced, "ScaledObject")

    def test_keda_and_the_hpa_exclude_each_other(self) -> None:
        """Two autoscalers on one Deployment fight: helm refuses both at once, and bounds the wrong way round."""
        with pytest.raises(HelmError, match="enable one"):
            render(set_values=["keda.enabled=true", "autoscaling.enabled=true"])
        with pytest.raises(HelmError, match="keda.minReplicas"):
            render(set_values=["keda.enabled=true", "keda.minReplicas=5", "keda.maxReplicas=2"])

    def test_values_schema_refuses_a_keda_without_trigger_and_bad_targets(self) -> None:
        """No trigger, a saturation target beyond 1, a server address that is not a URL: refused before rendering."""
        refused = [
            ["keda.enabled=true", "keda.saturation.enabled=false"],
            ["keda.enabled=true", "keda.saturation.target=2"],
            ["keda.enabled=true", "keda.prometheus.serverAddress=prometheus:9090"],
        ]
        for values in refused:
            with pytest.raises(HelmError, match="schema"):
                render(set_values=values)

    def test_queries_return_one_value_on_a_real_prometheus(self, scraped: PrometheusServer) -> None:
        """Each trigger's query is valid PromQL and returns the single element KEDA needs, from the
        release's series only."""
        for name, trigger in triggers(render(KEDA_VALUES)).items():
            result = scraped.query(trigger["metadata"]["query"])
            assert len(result) == 1, name
            assert float(result[0]["value"][1]) > 0, name
            other = trigger["metadata"]["query"].replace(APP, "another-service")
            assert [float(r["value"][1]) for r in scraped.query(other)] == [0.0], name


class TestOverloadValues:
    def test_cap_and_readiness_become_the_settings(self) -> None:
        """overload.maxInFlight and readinessMaxSaturation set OPSKIT_MAX_IN_FLIGHT and
        OPSKIT_READINESS_MAX_SATURATION; by default neither is set."""
        env = container_env(render(KEDA_VALUES))
        assert env["OPSKIT_MAX_IN_FLIGHT"]["value"] == "auto"
        assert env["OPSKIT_READINESS_MAX_SATURATION"]["value"] == "0.95"
        assert container_env(render(set_values=["overload.maxInFlight=25"]))["OPSKIT_MAX_IN_FLIGHT"]["value"] == "25"
        default = container_env(render())
        assert "OPSKIT_MAX_IN_FLIGHT" not in default
        assert "OPSKIT_READINESS_MAX_SATURATION" not in default

    @pytest.mark.parametrize(
        "value",
        ["overload.maxInFlight=-1", "overload.maxInFlight=fast", "overload.readinessMaxSaturation=2"],
    )
    def test_bad_values_are_refused(self, value: str) -> None:
        with pytest.raises(HelmError, match="schema"):
            render(set_values=[value])


@pytest.fixture(scope="module")
def scraped_otel() -> Iterator[PrometheusServer]:
    """The same, with the metrics named by OpenTelemetry's conventions."""
    with (
        StandInExporter(naming="otel") as exporter,
        prometheus_server(targets=[exporter.target], target_labels=TARGET_LABELS) as prom,
    ):
        prom.wait_for("rate(http_server_request_duration_seconds_count[15s]) > 0")
        yield prom


class TestPrometheusAdapterRule:
    def rule(self, path: Any = ADAPTER_VALUES) -> dict[str, Any]:
        (rule,) = yaml.safe_load(path.read_text())["rules"]["custom"]
        return dict(rule)

    def test_serves_the_metric_the_hpa_reads(self) -> None:
        """The rule's metric is the one `autoscaling.requestsPerSecondMetric` names, per pod."""
        values = yaml.safe_load((CHART / "values.yaml").read_text())
        rule = self.rule()
        assert rule["name"]["as"] == values["autoscaling"]["requestsPerSecondMetric"]
        assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
        hpa = one(
            render(set_values=["autoscaling.enabled=true", "autoscaling.requestsPerSecond=50"]),
            "HorizontalPodAutoscaler",
        )
        pods = next(m for m in hpa["spec"]["metrics"] if m["type"] == "Pods")
        assert pods["pods"]["metric"]["name"] == rule["name"]["as"]

    @pytest.mark.parametrize("naming", ["prometheus", "otel"])
    def test_the_query_expanded_as_the_adapter_does_returns_a_rate_per_pod(
        self, naming: str, request: pytest.FixtureRequest
    ) -> None:
        """seriesQuery finds the scraped series; metricsQuery, its placeholders filled for one pod, is a
        rate per pod (the otel values on the otel names)."""
        scraped: PrometheusServer = request.getfixturevalue("scraped" if naming == "prometheus" else "scraped_otel")
        rule = self.rule(ADAPTER_VALUES if naming == "prometheus" else ADAPTER_VALUES_OTEL)
        assert rule["name"]["as"] == self.rule()["name"]["as"]
        assert scraped.series(rule["seriesQuery"])
        series = re.match(r"\^(.+)\$", rule["name"]["matches"])
        assert series is not None
        query = (
            rule["metricsQuery"]
            .replace("<<.Series>>", series.group(1))
            .replace("<<.LabelMatchers>>", f'namespace="{NAMESPACE}",pod=~"{APP}-0"')
            .replace("<<.GroupBy>>", "pod")
        )
        (result,) = scraped.query(query)
        assert result["metric"] == {"pod": f"{APP}-0"}
        assert float(result["value"][1]) > 0
