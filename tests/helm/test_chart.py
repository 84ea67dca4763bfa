"""The opskit Helm chart, rendered by the real helm: valid objects, hardened defaults, optional parts."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.helm.chart import (
    CHART,
    CUSTOM_KINDS,
    KUBERNETES_VERSION,
    NAMESPACE,
    RELEASE,
    SCENARIOS,
    HelmError,
    Manifest,
    app_container,
    container_env,
    find,
    helm,
    one,
    render,
    render_scenario,
    validate_custom_resource,
)
from tests.servers import ROOT

APP = f"{RELEASE}-opskit"
scenario = pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.stem)


def _pod_spec(manifests: list[Manifest] | tuple[Manifest, ...]) -> Manifest:
    return dict(one(list(manifests), "Deployment")["spec"]["template"]["spec"])


class TestLintAndRender:
    """helm itself accepts the chart with every scenario; Kubernetes would accept every object."""

    def test_scenarios_exist(self) -> None:
        """Minimal, production, separate metrics port and bundled Redis scenarios are shipped."""
        assert {p.stem for p in SCENARIOS} >= {
            "minimal-values",
            "production-values",
            "metrics-port-values",
            "bundled-redis-values",
        }

    @scenario
    def test_lint_strict(self, values: Path) -> None:
        """`helm lint --strict` passes with the scenario's values."""
        output = helm("lint", "--strict", CHART, "-f", values)
        assert "0 chart(s) failed" in output

    @scenario
    @pytest.mark.parametrize("version", [KUBERNETES_VERSION, kubernetes_validate.latest_version()])
    def test_objects_are_valid_kubernetes(self, values: Path, version: str) -> None:
        """Every built-in object validates against Kubernetes 1.30's and the newest OpenAPI schema (strict)."""
        manifests = render_scenario(values)
        builtin = [m for m in manifests if m["kind"] not in CUSTOM_KINDS]
        assert builtin
        for manifest in builtin:
            kubernetes_validate.validate(manifest, version, strict=True)

    @scenario
    def test_custom_resources_match_their_crd(self, values: Path) -> None:
        """ServiceMonitor, PrometheusRule and HTTPRoute validate against schemas written from their CRDs."""
        for manifest in render_scenario(values):
            if manifest["kind"] in CUSTOM_KINDS:
                validate_custom_resource(manifest)

    @scenario
    def test_every_object_is_namespaced_to_the_release(self, values: Path) -> None:
        """Objects carry the release namespace (checkov and GitOps tools read it from the manifest)."""
        for manifest in render_scenario(values):
            assert manifest["metadata"]["namespace"] == NAMESPACE, manifest["kind"]

    def test_validation_catches_a_bad_object(self) -> None:
        """The validators can fail: a wrong type and an unknown CRD field are rejected."""
        deployment = one(render(), "Deployment")
        deployment["spec"]["replicas"] = "two"
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
        monitor = one(render(set_values=["serviceMonitor.enabled=true"]), "ServiceMonitor")
        monitor["spec"]["endpoints"][0]["intervall"] = "30s"
        with pytest.raises(jsonschema.ValidationError):
            validate_custom_resource(monitor)

    def test_kubernetes_older_than_1_30_is_refused(self) -> None:
        """kubeVersion: the chart needs 1.30 (preStop sleep action, matchLabelKeys)."""
        with pytest.raises(HelmError, match="kubeVersion"):
            helm("template", "x", CHART, "--kube-version", "1.29.0")


class TestHardenedDefaults:
    """With no values at all, the pod is locked down the way a security review expects."""

    def test_pod_security(self) -> None:
        """Non-root UID >= 10000, seccomp RuntimeDefault, no service-account token, no service links."""
        spec = _pod_spec(render())
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] >= 10000
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        assert spec["enableServiceLinks"] is False

    def test_container_security(self) -> None:
        """Read-only root filesystem, no privilege escalation, every capability dropped."""
        context = app_container(render())["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["privileged"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["runAsUser"] >= 10000

    def test_tmp_is_the_only_writable_path(self) -> None:
        """An emptyDir at /tmp, where PROMETHEUS_MULTIPROC_DIR lives."""
        manifests = render()
        mounts = app_container(manifests)["volumeMounts"]
        assert mounts == [{"name": "tmp", "mountPath": "/tmp"}]
        volume = _pod_spec(manifests)["volumes"][0]
        assert volume["name"] == "tmp" and "sizeLimit" in volume["emptyDir"]
        assert container_env(manifests)["PROMETHEUS_MULTIPROC_DIR"]["value"].startswith("/tmp/")

    def test_resources(self) -> None:
        """Requests and limits for CPU, memory and ephemeral storage."""
        resources = app_container(render())["resources"]
        for bound in ("requests", "limits"):
            assert set(resources[bound]) == {"cpu", "memory", "ephemeral-storage"}

    def test_probes(self) -> None:
        """Startup and liveness probe /healthz, readiness probes /readyz, on the app port."""
        container = app_container(render())
        assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}

    @pytest.mark.parametrize(("pre_stop", "graceful"), [(5, 20), (0, 30), (15, 60)])
    def test_grace_period_outlasts_pre_stop_and_drain(self, pre_stop: int, graceful: int) -> None:
        """terminationGracePeriodSeconds > preStop sleep + GRACEFUL_TIMEOUT, so draining is never cut."""
        manifests = render(set_values=[f"preStopSleepSeconds={pre_stop}", f"serving.gracefulTimeout={graceful}"])
        spec = _pod_spec(manifests)
        assert spec["terminationGracePeriodSeconds"] > pre_stop + graceful
        assert container_env(manifests)["GRACEFUL_TIMEOUT"]["value"] == str(graceful)
        lifecycle = app_container(manifests).get("lifecycle")
        if pre_stop:
            assert lifecycle == {"preStop": {"sleep": {"seconds": pre_stop}}}
        else:
            assert lifecycle is None

    def test_a_too_short_grace_period_is_refused(self) -> None:
        """An explicit grace period that would cut the drain fails the render, naming the values."""
        with pytest.raises(HelmError, match="terminationGracePeriodSeconds"):
            render(
                set_values=["terminationGracePeriodSeconds=20", "preStopSleepSeconds=5", "serving.gracefulTimeout=20"]
            )

    def test_topology_spread(self) -> None:
        """Pods spread across zones and nodes."""
        constraints = _pod_spec(render())["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in constraints} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}

    def test_command_runs_opskit_serve(self) -> None:
        """The container runs `opskit-asgi serve MODULE:APP` with the module from values."""
        container = app_container(render(set_values=["app.module=shop.main:api"]))
        assert container["command"] == ["opskit-asgi", "serve", "shop.main:api"]

    def test_resource_attributes_come_from_the_downward_api(self) -> None:
        """OTEL_RESOURCE_ATTRIBUTES names the pod, namespace and node, filled by the downward API."""
        env = container_env(render(set_json=['tracing.resourceAttributes={"team":"payments"}']))
        attributes = env["OTEL_RESOURCE_ATTRIBUTES"]["value"]
        for key, var in (("k8s.pod.name", "K8S_POD_NAME"), ("k8s.namespace.name", "K8S_NAMESPACE")):
            assert f"{key}=$({var})" in attributes
            assert "fieldRef" in env[var]["valueFrom"]
        assert "k8s.node.name=$(K8S_NODE_NAME)" in attributes
        assert attributes.endswith(",team=payments")
        # $(VAR) expansion only sees variables defined earlier in the list.
        names = list(env)
        assert names.index("K8S_POD_NAME") < names.index("OTEL_RESOURCE_ATTRIBUTES")

    def test_config_change_rolls_the_pods(self) -> None:
        """A settings or Redis Secret change alters the pod template's checksum annotations."""

        def annotations(*set_values: str) -> dict[str, str]:
            deployment = one(render(set_values=set_values), "Deployment")
            return dict(deployment["spec"]["template"]["metadata"]["annotations"])

        base = annotations()
        changed = annotations("app.config.OPSKIT_RATE_LIMIT=10/second")
        assert base["checksum/config"] != changed["checksum/config"]
        redis = annotations("redis.mode=external", "redis.external.url=redis://r:6379/0")
        assert base["checksum/secret"] != redis["checksum/secret"]

    def test_image_by_digest(self) -> None:
        """A digest wins over the tag."""
        digest = "sha256:" + "a" * 64
        image = app_container(render(set_values=[f"image.digest={digest}", "image.tag=1.2.3"]))["image"]
        assert image.endswith(f"@{digest}")
        assert app_container(render(set_values=["image.tag=1.2.3"]))["image"].endswith(":1.2.3")


class TestOptionalObjects:
    """Each optional object appears only when enabled, with what it needs."""

    def test_minimal_renders_only_the_core(self) -> None:
        """Defaults: Deployment, Service, ServiceAccount, ConfigMap, NetworkPolicy, PDB, the test pod and its policy."""
        kinds = sorted(m["kind"] for m in render())
        expected = ["ConfigMap", "Deployment", "NetworkPolicy", "Pod", "PodDisruptionBudget", "Service"]
        assert kinds == sorted([*expected, "ServiceAccount", "NetworkPolicy"])

    def test_hpa_replaces_replicas(self) -> None:
        """With the HPA on, the Deployment has no replicas (the HPA owns them); scale-down is damped."""
        manifests = render(set_values=["autoscaling.enabled=true", "autoscaling.requestsPerSecond=50"])
        assert "replicas" not in one(manifests, "Deployment")["spec"]
        hpa = one(manifests, "HorizontalPodAutoscaler")
        metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
        assert metrics["Resource"]["resource"]["name"] == "cpu"
        assert metrics["Pods"]["pods"]["target"] == {"type": "AverageValue", "averageValue": "50"}
        assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] > 0
        assert one(render(), "Deployment")["spec"]["replicas"] == 2

    @pytest.mark.parametrize(("replicas", "expected"), [(1, 0), (2, 1), (5, 1)])
    def test_pdb_only_with_more_than_one_replica(self, replicas: int, expected: int) -> None:
        """A PDB on a single replica would block node drains: none is rendered then."""
        assert len(find(render(set_values=[f"replicaCount={replicas}"]), "PodDisruptionBudget")) == expected

    def test_monitoring_objects_need_their_api(self) -> None:
        """ServiceMonitor and PrometheusRule render only where the CRDs exist, unless forced."""
        enabled = ["serviceMonitor.enabled=true", "prometheusRule.enabled=true"]
        assert not find(render(set_values=enabled, api_versions=()), "ServiceMonitor")
        assert not find(render(set_values=enabled, api_versions=()), "PrometheusRule")
        notes = helm("install", "x", CHART, "--dry-run=client", *[a for v in enabled for a in ("--set", v)])
        assert "no ServiceMonitor was created" in notes
        forced = [*enabled, "serviceMonitor.force=true", "prometheusRule.force=true"]
        manifests = render(set_values=forced, api_versions=())
        assert find(manifests, "ServiceMonitor") and find(manifests, "PrometheusRule")
        assert not find(render(), "ServiceMonitor")

    def test_separate_metrics_port(self) -> None:
        """metricsPort: a second container and Service port, scraped by the ServiceMonitor, env set."""
        manifests = render_scenario(CHART / "ci" / "metrics-port-values.yaml")
        ports = {p["name"]: p["containerPort"] for p in app_container(manifests)["ports"]}
        assert ports == {"http": 8000, "metrics": 9000}
        assert container_env(manifests)["OPSKIT_METRICS_PORT"]["value"] == "9000"
        assert container_env(manifests)["OPSKIT_METRICS_ON_APP_PORT"]["value"] == "false"
        service_ports = {p["name"] for p in one(manifests, "Service")["spec"]["ports"]}
        assert service_ports == {"http", "metrics"}
        assert one(manifests, "ServiceMonitor")["spec"]["endpoints"][0]["port"] == "metrics"
        ingress = find(manifests, "NetworkPolicy", APP)[0]["spec"]["ingress"]
        assert [rule["ports"][0]["port"] for rule in ingress] == ["http", "metrics"]
        assert "from" in ingress[1]

    def test_metrics_on_the_app_port_by_default(self) -> None:
        """Without metricsPort the ServiceMonitor scrapes the http port and no metrics env is set."""
        manifests = render(set_values=["serviceMonitor.enabled=true"])
        assert one(manifests, "ServiceMonitor")["spec"]["endpoints"][0]["port"] == "http"
        assert "OPSKIT_METRICS_PORT" not in container_env(manifests)

    def test_redis_url_comes_from_a_secret(self) -> None:
        """External Redis: the URL goes into a Secret (or an existing one) and reaches the pods by reference."""
        manifests = render(set_values=["redis.mode=external", "redis.external.url=rediss://cache:6380/0"])
        secret = one(manifests, "Secret")
        assert secret["stringData"]["redis-url"] == "rediss://cache:6380/0"
        ref = container_env(manifests)["OPSKIT_REDIS_URL"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": secret["metadata"]["name"], "key": "redis-url"}
        existing = render(set_values=["redis.mode=external", "redis.external.existingSecret=vault-redis"])
        assert not find(existing, "Secret")
        ref = container_env(existing)["OPSKIT_REDIS_URL"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "vault-redis", "key": "redis-url"}
        assert "OPSKIT_REDIS_URL" not in container_env(render())

    def test_bundled_redis(self) -> None:
        """Bundled Redis: one hardened StatefulSet, a Service, and a NetworkPolicy letting only the app in."""
        manifests = render_scenario(CHART / "ci" / "bundled-redis-values.yaml")
        statefulset = one(manifests, "StatefulSet")
        assert statefulset["spec"]["replicas"] == 1
        redis = statefulset["spec"]["template"]["spec"]["containers"][0]
        assert redis["securityContext"]["readOnlyRootFilesystem"] is True
        assert "--maxmemory" in redis["args"]
        url = one(manifests, "Secret")["stringData"]["redis-url"]
        redis_service = next(s for s in find(manifests, "Service") if s["metadata"]["name"].endswith("-redis"))
        assert url == f"redis://{redis_service['metadata']['name']}.{NAMESPACE}.svc:6379/0"
        policies = {p["metadata"]["name"]: p for p in find(manifests, "NetworkPolicy")}
        redis_policy = policies[redis_service["metadata"]["name"]]
        allowed = redis_policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
        assert allowed == one(manifests, "Deployment")["spec"]["selector"]["matchLabels"]

    def test_network_policy_egress(self) -> None:
        """Egress: DNS always; Redis and the OTLP collector only when configured."""
        minimal = find(render(), "NetworkPolicy", APP)[0]["spec"]["egress"]
        assert [sorted(p["port"] for p in rule["ports"]) for rule in minimal] == [[53, 53]]
        production = find(render_scenario(CHART / "ci" / "production-values.yaml"), "NetworkPolicy", APP)[0]["spec"][
            "egress"
        ]
        ports = sorted(p["port"] for rule in production for p in rule["ports"])
        assert ports == [53, 53, 4317, 4318, 6379]

    def test_ingress_and_httproute(self) -> None:
        """Ingress and Gateway API HTTPRoute both send traffic to the Service's http port."""
        ingress = one(render_scenario(CHART / "ci" / "production-values.yaml"), "Ingress")
        backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
        assert backend["port"] == {"name": "http"}
        route = one(render_scenario(CHART / "ci" / "bundled-redis-values.yaml"), "HTTPRoute")
        assert route["spec"]["rules"][0]["backendRefs"][0]["port"] == 80
        assert route["spec"]["parentRefs"][0]["name"] == "public"

    @pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.stem)
    def test_selectors_pick_only_the_app_pods(self, values: Path) -> None:
        """The Service, PDB and NetworkPolicy select the Deployment's pods, never the test or Redis pods."""
        manifests = render_scenario(values)
        app_labels = one(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
        others = [m["metadata"]["labels"] for m in find(manifests, "Pod")]
        others += [s["spec"]["template"]["metadata"]["labels"] for s in find(manifests, "StatefulSet")]
        app_service = next(s for s in find(manifests, "Service") if s["spec"]["ports"][0]["name"] == "http")
        app_policy = find(manifests, "NetworkPolicy", APP)[0]
        selectors = [app_service["spec"]["selector"], app_policy["spec"]["podSelector"]["matchLabels"]]
        selectors += [pdb["spec"]["selector"]["matchLabels"] for pdb in find(manifests, "PodDisruptionBudget")]
        for selector in selectors:
            assert selector.items() <= app_labels.items()
            for labels in others:
                assert not selector.items() <= labels.items(), (selector, labels)

    def test_restricted_ingress_still_admits_prometheus_and_helm_test(self) -> None:
        """With ingressFrom set and metrics on the app port, the scraper and the test pod may still connect."""
        manifests = render(set_json=['networkPolicy.ingressFrom=[{"namespaceSelector":{"matchLabels":{"x":"y"}}}]'])
        (rule,) = find(manifests, "NetworkPolicy", APP)[0]["spec"]["ingress"]
        test_labels = one(manifests, "Pod")["metadata"]["labels"]
        peers = rule["from"]
        assert {"namespaceSelector": {"matchLabels": {"x": "y"}}} in peers
        assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}} in peers
        pod_peers = [p["podSelector"]["matchLabels"] for p in peers if "podSelector" in p]
        assert any(selector.items() <= test_labels.items() for selector in pod_peers)

    def test_helm_test_pod_calls_readyz(self) -> None:
        """`helm test` runs a pod (hook) that requests /readyz through the Service."""
        pod = one(render(), "Pod")
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        script = pod["spec"]["containers"][0]["command"][-1]
        assert f"http://{APP}.{NAMESPACE}.svc:80/readyz" in script
        assert pod["spec"]["restartPolicy"] == "Never"


class TestSingleSourceOfTruth:
    """The chart wraps the repository's dashboards and rules; it holds no copy that could drift."""

    def test_chart_links_to_the_repository_folders(self) -> None:
        """helm/opskit/dashboards and rules are symbolic links to grafana/dashboards and prometheus/rules."""
        assert (CHART / "dashboards").is_symlink()
        assert (CHART / "dashboards").resolve() == (ROOT / "grafana" / "dashboards").resolve()
        assert (CHART / "rules").is_symlink()
        assert (CHART / "rules").resolve() == (ROOT / "prometheus" / "rules").resolve()
        assert (CHART / "dashboards-otel").resolve() == (ROOT / "grafana" / "dashboards-otel").resolve()

    def test_dashboard_configmaps_hold_the_files(self) -> None:
        """One ConfigMap per dashboard, labelled for the sidecar, with the file's exact bytes."""
        manifests = render(set_values=["dashboards.enabled=true"])
        maps = [m for m in find(manifests, "ConfigMap") if "grafana_dashboard" in m["metadata"]["labels"]]
        files = {p.name: p.read_text() for p in (ROOT / "grafana" / "dashboards").glob("*.json")}
        assert len(maps) == len(files) == 3
        for configmap in maps:
            assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
            ((name, text),) = configmap["data"].items()
            assert text == files[name]
            json.loads(text)

    def test_prometheusrule_holds_the_rule_files(self) -> None:
        """The PrometheusRule's groups are exactly the groups of prometheus/rules/*.yaml."""
        rule = one(render(set_values=["prometheusRule.enabled=true"]), "PrometheusRule")
        groups = []
        for path in sorted((ROOT / "prometheus" / "rules").glob("*.yaml")):
            groups += yaml.safe_load(path.read_text())["groups"]
        assert rule["spec"]["groups"] == groups

    def test_otel_naming_renders_the_otel_set(self) -> None:
        """metrics.naming=otel sets OPSKIT_METRICS_NAMING and ships the generated otel dashboards and rules."""
        otel = ["metrics.naming=otel", "dashboards.enabled=true", "prometheusRule.enabled=true"]
        manifests = render(set_values=otel)
        assert container_env(manifests)["OPSKIT_METRICS_NAMING"]["value"] == "otel"
        maps = [m for m in find(manifests, "ConfigMap") if "grafana_dashboard" in m["metadata"]["labels"]]
        files = {p.name: p.read_text() for p in (ROOT / "grafana" / "dashboards-otel").glob("*.json")}
        assert len(maps) == len(files) == 3
        assert {name: text for m in maps for name, text in m["data"].items()} == files
        groups = []
        for path in sorted((ROOT / "prometheus" / "rules" / "otel").glob("*.yaml")):
            groups += yaml.safe_load(path.read_text())["groups"]
        assert one(manifests, "PrometheusRule")["spec"]["groups"] == groups
        default = render(set_values=["prometheusRule.enabled=true"])
        assert container_env(default)["OPSKIT_METRICS_NAMING"]["value"] == "prometheus"
        assert one(default, "PrometheusRule")["spec"]["groups"] != groups

    def test_packaged_chart_contains_the_files(self, tmp_path: Path) -> None:
        """`helm package` follows the links: the archive carries the dashboards and rules themselves."""
        helm("package", CHART, "-d", tmp_path)
        (archive,) = tmp_path.glob("opskit-*.tgz")
        with tarfile.open(archive) as tgz:
            names = set(tgz.getnames())
            member = tgz.extractfile("opskit/dashboards/opskit-overview.json")
            assert member is not None
            with member:
                packaged = member.read().decode()
        assert packaged == (ROOT / "grafana" / "dashboards" / "opskit-overview.json").read_text()
        assert "opskit/rules/opskit-alerts.yaml" in names
        assert "opskit/values.schema.json" in names
