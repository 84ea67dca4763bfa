"""The chart's container environment is what opskit's settings and gunicorn config read."""

from __future__ import annotations

import importlib.util
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from opskit.settings import env_vars
from tests.helm.chart import CHART, Manifest, container_env, one, render
from tests.servers import ROOT, SCRIPTS, Background, free_port, wait_for_port

# The variables the chart must pass to the workers (serving, metrics, rate limiting, tracing).
SERVING_ENV = frozenset(
    {
        "WEB_CONCURRENCY",
        "WORKERS_PER_CORE",
        "MAX_WORKERS",
        "PORT",
        "GRACEFUL_TIMEOUT",
        "TIMEOUT",
        "KEEP_ALIVE",
        "MAX_REQUESTS",
        "MAX_REQUESTS_JITTER",
        "LOG_LEVEL",
        "FORWARDED_ALLOW_IPS",
        "PROMETHEUS_MULTIPROC_DIR",
        "OPSKIT_METRICS_PORT",
        "OPSKIT_METRICS_ON_APP_PORT",
        "OPSKIT_REDIS_URL",
        "OPSKIT_TRUSTED_PROXIES",
        "OTEL_SERVICE_NAME",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_RESOURCE_ATTRIBUTES",
    }
)


def settings_env() -> set[str]:
    """Every variable opskit reads (``OTEL_RESOURCE_ATTRIBUTES`` too: opskit builds the resource itself)."""
    return set(env_vars())


def _all_options() -> list[Manifest]:
    return render(
        CHART / "ci" / "production-values.yaml",
        set_values=["app.metricsPort=9000", "serving.webConcurrency=4"],
    )


def _configmap_env(manifests: list[Manifest]) -> dict[str, str]:
    configmap = next(
        m for m in manifests if m["kind"] == "ConfigMap" and "grafana_dashboard" not in m["metadata"]["labels"]
    )
    return dict(configmap["data"])


class TestEnvNames:
    """No variable the chart sets is ignored by the application."""

    def test_container_env_is_read_by_opskit(self) -> None:
        """Every env var with a value (not a downward-API helper) is one opskit's settings read."""
        manifests = _all_options()
        env = container_env(manifests)
        helpers = {name for name, item in env.items() if "fieldRef" in item.get("valueFrom", {})}
        assert helpers == {"K8S_POD_NAME", "K8S_NAMESPACE", "K8S_NODE_NAME", "K8S_POD_UID"}
        unknown = set(env) - helpers - settings_env()
        assert not unknown, f"the chart sets variables opskit does not read: {sorted(unknown)}"

    def test_every_serving_variable_is_wired(self) -> None:
        """With every option set, the chart passes every serving variable."""
        env = set(container_env(_all_options()))
        assert env >= SERVING_ENV

    def test_configmap_settings_are_read_by_opskit(self) -> None:
        """The settings the chart itself writes into the pods' ConfigMap (envFrom) are opskit's."""
        data = _configmap_env(render())
        assert data and set(data) <= set(env_vars())

    def test_a_misspelt_variable_would_be_caught(self) -> None:
        """The check can fail: a name opskit does not read is not in the reference set."""
        assert "WEB_CONCURENCY" not in settings_env()


def _expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), value)


def _session_leaves(session: int) -> list[int]:
    """Processes of a session that have no child: the workers under a gunicorn master."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == session:
            parents[int(entry.name)] = int(fields[1])
    return [pid for pid in parents if pid not in parents.values() and pid != session]


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("opskit.cli") is None, reason="`opskit serve` lands with the serving feature"
)
class TestWorkersStart:
    """`opskit serve`, given the rendered container env, starts the worker count the values ask for."""

    def _serve(self, manifests: list[Manifest], tmp_path: Path, **overrides: str) -> Background:
        """`opskit serve` with the Deployment's env (downward API faked) and the ConfigMap's settings."""
        env = {name: item["value"] for name, item in container_env(manifests).items() if "value" in item}
        env.update(_configmap_env(manifests))
        fake_pod = {"K8S_POD_NAME": "shop-opskit-0", "K8S_NAMESPACE": "apps", "K8S_NODE_NAME": "n1", "K8S_POD_UID": "u"}
        env = {name: _expand(value, fake_pod) for name, value in env.items()}
        env.update(PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"), **overrides)
        command = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]["command"]
        assert command[:2] == ["opskit-asgi", "serve"]
        return Background([str(SCRIPTS / command[0]), "serve", "tests.helm.tiny_app:app"], env=env, cwd=ROOT)

    def test_worker_count_follows_web_concurrency(self, tmp_path: Path) -> None:
        """serving.webConcurrency=3 in values: gunicorn runs exactly 3 workers, and the app answers."""
        port = free_port()
        server = self._serve(render(set_values=["serving.webConcurrency=3"]), tmp_path, PORT=str(port))
        try:
            wait_for_port(port, timeout=30)
            _get_ok(f"http://127.0.0.1:{port}/")
            deadline = time.monotonic() + 20
            while len(_session_leaves(server.pid)) != 3 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(_session_leaves(server.pid)) == 3, server.stderr()[-2000:]
        finally:
            server.close()

    @pytest.mark.skipif(importlib.util.find_spec("opskit.metrics") is None, reason="needs the metrics feature")
    def test_metrics_port_scenario(self, tmp_path: Path) -> None:
        """ci/metrics-port-values.yaml: /metrics answers on the metrics port only, not on the app port."""
        app_port, metrics_port = free_port(), free_port()
        manifests = render(CHART / "ci" / "metrics-port-values.yaml")
        server = self._serve(manifests, tmp_path, PORT=str(app_port), OPSKIT_METRICS_PORT=str(metrics_port))
        try:
            wait_for_port(app_port, timeout=30)
            wait_for_port(metrics_port, timeout=30)
            _get_ok(f"http://127.0.0.1:{app_port}/")
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
                assert b"http_requests_total" in response.read()
            with pytest.raises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(f"http://127.0.0.1:{app_port}/metrics", timeout=5).close()
            assert caught.value.code == 404
            caught.value.close()
        finally:
            server.close()


def _get_ok(url: str, timeout: float = 30.0) -> None:
    """GET until 200: gunicorn binds the port before its workers answer."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)
