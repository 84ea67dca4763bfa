"""The local stack: compose file and configs parse, are valid for their programs, and reference real files."""

from __future__ import annotations

import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from tests.servers import ROOT, which

DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def _binds(service: str) -> dict[PurePosixPath, Path]:
    """Container path -> host path of a service's bind mounts (relative to the compose file)."""
    binds = {}
    for volume in _compose()["services"][service].get("volumes", []):
        source, target = volume.split(":")[:2]
        binds[PurePosixPath(target)] = (DEPLOY / source).resolve()
    return binds


def _host_path(service: str, container_path: str) -> Path:
    """Where a path inside a service's container comes from on the host."""
    path = PurePosixPath(container_path)
    for target, source in _binds(service).items():
        if path == target or target in path.parents:
            return source / path.relative_to(target)
    raise AssertionError(f"{service}: {container_path} is not mounted from the repository")


def _check_prometheus_config(path: Path, tmp_path: Path) -> None:
    """`promtool check config` accepts the Prometheus config at ``path`` and finds both rule files it loads."""
    config = yaml.safe_load(path.read_text())
    config["rule_files"] = [str(_host_path("prometheus", p)) for p in config["rule_files"]]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [which("promtool"), "check", "config", str(local)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 2 rule files found" in result.stdout + result.stderr


def _bound_sources() -> list[tuple[str, Path]]:
    return [(name, source) for name in _compose()["services"] for source in _binds(name).values()]


class TestComposeFile:
    """deploy/compose.yaml describes the whole stack."""

    def test_services(self) -> None:
        """The app, Redis, Prometheus, Tempo (OTLP traces) and Grafana."""
        assert set(_compose()["services"]) == {"app", "redis", "prometheus", "tempo", "grafana"}

    def test_app_runs_opskit_serve_hardened(self) -> None:
        """The app runs `opskit-asgi serve` read-only, non-root, with Redis and Tempo wired by env."""
        app = _compose()["services"]["app"]
        assert app["command"][:2] == ["opskit-asgi", "serve"]
        assert app["read_only"] is True and app["tmpfs"] == ["/tmp"]
        assert int(app["user"].split(":")[0]) >= 10000
        env = app["environment"]
        assert env["OPSKIT_REDIS_URL"].startswith("redis://redis:")
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://tempo:4318"
        assert env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")

    def test_images_are_pinned(self) -> None:
        """Every image has an explicit version tag."""
        for name, service in _compose()["services"].items():
            if "image" in service:
                tag = service["image"].rsplit(":", 1)[-1]
                assert tag and tag != "latest" and "/" not in tag, name

    @pytest.mark.parametrize(("service", "source"), _bound_sources(), ids=lambda v: str(v))
    def test_bind_mounts_exist(self, service: str, source: Path) -> None:
        """Every file and folder the stack mounts is in the repository."""
        assert source.exists(), f"{service}: {source} is missing"

    def test_rules_and_dashboards_are_the_repository_ones(self) -> None:
        """Prometheus loads prometheus/rules and Grafana reads grafana/dashboards: no copies."""
        assert _host_path("prometheus", "/etc/prometheus/rules") == ROOT / "prometheus" / "rules"
        provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/dashboards.yaml").read_text())
        path = provider["providers"][0]["options"]["path"]
        assert _host_path("grafana", path) == ROOT / "grafana" / "dashboards"
        home = _compose()["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
        assert _host_path("grafana", home).is_file()

    def test_app_build_uses_the_repository_dockerfile(self) -> None:
        """The app image is built from the repository's Dockerfile."""
        build = _compose()["services"]["app"]["build"]
        context = (DEPLOY / build["context"]).resolve()
        assert context == ROOT
        if not (context / build["dockerfile"]).exists():
            pytest.skip("the Dockerfile lands with the serving feature")


class TestPrometheusConfig:
    """deploy/prometheus/prometheus.yml, checked by the real promtool with the mounts resolved."""

    def test_promtool_check_config(self, tmp_path: Path) -> None:
        """`promtool check config` accepts it and finds the rule files it loads."""
        _check_prometheus_config(DEPLOY / "prometheus/prometheus.yml", tmp_path)

    def test_targets_carry_kubernetes_labels(self) -> None:
        """The app target has namespace, service and pod labels, as on Kubernetes."""
        config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
        job = next(job for job in config["scrape_configs"] if job["job_name"] == "opskit")
        (static,) = job["static_configs"]
        assert static["targets"] == ["app:8000"]
        assert set(static["labels"]) == {"namespace", "service", "pod"}


class TestGrafanaProvisioning:
    """Grafana's datasources: Prometheus with exemplars linked to Tempo."""

    def test_datasources(self) -> None:
        """A Prometheus and a Tempo datasource; exemplars point at the Tempo uid."""
        datasources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/datasources.yaml").read_text())
        by_type = {d["type"]: d for d in datasources["datasources"]}
        assert set(by_type) == {"prometheus", "tempo"}
        (destination,) = by_type["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
        assert destination["datasourceUid"] == by_type["tempo"]["uid"]
        assert by_type["prometheus"]["url"] == "http://prometheus:9090"
        assert by_type["tempo"]["url"] == "http://tempo:3200"

    def test_tempo_receives_otlp_where_the_app_sends(self) -> None:
        """Tempo's OTLP HTTP receiver listens on the port of the app's OTEL_EXPORTER_OTLP_ENDPOINT."""
        tempo = yaml.safe_load((DEPLOY / "tempo/tempo.yaml").read_text())
        endpoint = tempo["distributor"]["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
        app_endpoint = _compose()["services"]["app"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
        assert endpoint.rsplit(":", 1)[1] == app_endpoint.rsplit(":", 1)[1]
        assert tempo["server"]["http_listen_port"] == 3200


OVERLAY = DEPLOY / "compose.collector.yaml"
COLLECTOR = DEPLOY / "otel-collector" / "config.yaml"


def _overlay() -> dict[str, Any]:
    return dict(yaml.safe_load(OVERLAY.read_text()))


class TestCollectorPath:
    """deploy/compose.collector.yaml: the app pushes all three signals to an OpenTelemetry Collector."""

    def test_app_sends_every_signal_to_the_collector(self) -> None:
        """The app's OTLP endpoint is the collector's HTTP receiver; metrics and logs go over OTLP."""
        env = _overlay()["services"]["app"]["environment"]
        collector = yaml.safe_load(COLLECTOR.read_text())
        receiver = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://otel-collector:{receiver.rsplit(':', 1)[1]}"
        assert (env["OTEL_METRICS_EXPORTER"], env["OTEL_LOGS_EXPORTER"]) == ("otlp", "otlp")
        assert "otel-collector" in _overlay()["services"]
        assert _overlay()["services"]["otel-collector"]["image"].rsplit(":", 1)[1] != "latest"

    def test_collector_pipelines_receive_all_three_signals(self) -> None:
        """metrics, traces and logs pipelines, each from the OTLP receiver, naming only defined components."""
        collector = yaml.safe_load(COLLECTOR.read_text())
        pipelines = collector["service"]["pipelines"]
        assert set(pipelines) == {"metrics", "traces", "logs"}
        for name, pipeline in pipelines.items():
            assert pipeline["receivers"] == ["otlp"], name
            assert set(pipeline.get("processors", [])) <= set(collector["processors"]), name
            assert pipeline["exporters"] and set(pipeline["exporters"]) <= set(collector["exporters"]), name

    def test_metrics_reach_prometheus_and_spans_tempo(self) -> None:
        """Remote write into a Prometheus that accepts it; spans to Tempo's OTLP HTTP receiver."""
        collector = yaml.safe_load(COLLECTOR.read_text())
        [metrics_exporter] = collector["service"]["pipelines"]["metrics"]["exporters"]
        assert collector["exporters"][metrics_exporter]["endpoint"] == "http://prometheus:9090/api/v1/write"
        assert "--web.enable-remote-write-receiver" in _overlay()["services"]["prometheus"]["command"]
        [traces_exporter] = collector["service"]["pipelines"]["traces"]["exporters"]
        tempo = yaml.safe_load((DEPLOY / "tempo/tempo.yaml").read_text())
        port = tempo["distributor"]["receivers"]["otlp"]["protocols"]["http"]["endpoint"].rsplit(":", 1)[1]
        assert collector["exporters"][traces_exporter]["endpoint"] == f"http://tempo:{port}"

    def test_mounts_exist_and_prometheus_config_is_valid(self, tmp_path: Path) -> None:
        """Every file the overlay mounts exists; its Prometheus config passes `promtool check config`."""
        for service in _overlay()["services"].values():
            for volume in service.get("volumes", []):
                assert (DEPLOY / volume.split(":")[0]).exists(), volume
        _check_prometheus_config(DEPLOY / "otel-collector/prometheus.yml", tmp_path)
