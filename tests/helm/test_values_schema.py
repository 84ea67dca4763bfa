"""values.schema.json (and the chart's own checks) refuse wrong types and impossible values."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.helm.chart import CHART, HelmError, render

# (why the value is wrong, --set-json values, what helm's error names)
REJECTED = [
    ("typo in a top-level key", ["replicaCout=2"], "additional properties 'replicaCout'"),
    ("replicas as a string", ['replicaCount="two"'], "/replicaCount"),
    ("negative replicas", ["replicaCount=-1"], "/replicaCount"),
    ("image tag latest", ['image.tag="latest"'], "/image/tag"),
    ("malformed digest", ['image.digest="sha256:abc"'], "/image/digest"),
    ("unknown pull policy", ['image.pullPolicy="Sometimes"'], "/image/pullPolicy"),
    ("app module without attribute", ['app.module="shop.main"'], "/app/module"),
    ("privileged app port", ["app.port=80"], "/app/port"),
    ("app port out of range", ["app.port=70000"], "/app/port"),
    ("privileged metrics port", ["app.metricsPort=443"], "/app/metricsPort"),
    ("metrics port equal to the app port", ["app.metricsPort=8000"], "app.metricsPort must differ"),
    ("setting that is not OPSKIT_ or OTEL_", ['app.config={"DEBUG":"1"}'], "invalid propertyName 'DEBUG'"),
    ("zero workers", ["serving.webConcurrency=0"], "/serving/webConcurrency"),
    ("workers as a string", ['serving.webConcurrency="4"'], "/serving/webConcurrency"),
    ("zero workers per core", ["serving.workersPerCore=0"], "/serving/workersPerCore"),
    ("zero max workers", ["serving.maxWorkers=0"], "/serving/maxWorkers"),
    ("zero worker timeout", ["serving.timeout=0"], "/serving/timeout"),
    ("zero graceful timeout", ["serving.gracefulTimeout=0"], "/serving/gracefulTimeout"),
    ("negative max requests", ["serving.maxRequests=-5"], "/serving/maxRequests"),
    ("jitter without max requests", ["serving.maxRequestsJitter=10"], "maxRequestsJitter needs"),
    ("unknown log level", ['serving.logLevel="verbose"'], "/serving/logLevel"),
    ("trusted proxy that is not a network", ['serving.trustedProxies=["proxy.local"]'], "/serving/trustedProxies"),
    ("OTLP endpoint without scheme", ['tracing.otlpEndpoint="collector:4318"'], "/tracing/otlpEndpoint"),
    ("resource attribute with a comma", ['tracing.resourceAttributes={"team":"a,b"}'], "/tracing/resourceAttributes"),
    ("unknown Redis mode", ['redis.mode="cluster"'], "/redis/mode"),
    ("Redis URL of another scheme", ['redis.mode="external"', 'redis.external.url="http://r"'], "/redis/external/url"),
    ("external Redis without URL or Secret", ['redis.mode="external"'], "needs redis.external.url"),
    ("running as root", ["securityContext.runAsUser=0"], "/securityContext/runAsUser"),
    ("low UID", ["podSecurityContext.runAsUser=1000"], "/podSecurityContext/runAsUser"),
    ("runAsNonRoot off", ["podSecurityContext.runAsNonRoot=false"], "/podSecurityContext/runAsNonRoot"),
    (
        "privilege escalation",
        ["securityContext.allowPrivilegeEscalation=true"],
        "/securityContext/allowPrivilegeEscalation",
    ),
    ("privileged container", ["securityContext.privileged=true"], "/securityContext/privileged"),
    ("resources without limits", ["resources.limits=null"], "missing property 'limits'"),
    ("malformed CPU quantity", ['resources.limits.cpu="lots"'], "/resources/limits/cpu"),
    ("unknown resource", ['resources.limits.gpu="1"'], "invalid propertyName 'gpu'"),
    ("probe path without slash", ['probes.readiness.path="readyz"'], "/probes/readiness/path"),
    ("zero probe period", ["probes.liveness.periodSeconds=0"], "/probes/liveness/periodSeconds"),
    ("negative preStop sleep", ["preStopSleepSeconds=-1"], "/preStopSleepSeconds"),
    ("grace period shorter than preStop and drain", ["terminationGracePeriodSeconds=10"], "must exceed"),
    ("unknown topology policy", ['topologySpread.whenUnsatisfiable="Maybe"'], "/topologySpread/whenUnsatisfiable"),
    ("unknown Service type", ['service.type="ExternalName"'], "/service/type"),
    (
        "unknown Ingress path type",
        ['ingress.hosts=[{"host":"a","paths":[{"path":"/","pathType":"Glob"}]}]'],
        "pathType",
    ),
    ("HTTPRoute without parent", ["httpRoute.enabled=true"], "/httpRoute/parentRefs"),
    ("zero HPA minimum", ["autoscaling.minReplicas=0"], "/autoscaling/minReplicas"),
    (
        "HPA minimum above maximum",
        ["autoscaling.enabled=true", "autoscaling.minReplicas=5", "autoscaling.maxReplicas=3"],
        "must not exceed",
    ),
    ("CPU target above 100 %", ["autoscaling.targetCPUUtilizationPercentage=150"], "targetCPUUtilizationPercentage"),
    ("zero requests per second", ["autoscaling.requestsPerSecond=0"], "/autoscaling/requestsPerSecond"),
    ("scale-down percent above 100", ["autoscaling.scaleDown.percentPerMinute=200"], "percentPerMinute"),
    ("PDB maxUnavailable zero", ["podDisruptionBudget.maxUnavailable=0"], "/podDisruptionBudget/maxUnavailable"),
    ("malformed scrape interval", ['serviceMonitor.interval="30 seconds"'], "/serviceMonitor/interval"),
    ("tmp volume on disk medium name", ['tmpVolume.medium="HugePages"'], "/tmpVolume/medium"),
    ("dashboard labels that are not strings", ['dashboards.labels={"grafana_dashboard":1}'], "/dashboards/labels"),
]


class TestValuesSchema:
    """Each rule, shown by one bad value that `helm template` refuses with a message pointing at it."""

    @pytest.mark.parametrize(("values", "message"), [r[1:] for r in REJECTED], ids=[r[0] for r in REJECTED])
    def test_rejected(self, values: list[str], message: str) -> None:
        """The bad value fails the render, and the error names the offending value."""
        with pytest.raises(HelmError) as caught:
            render(set_json=values)
        assert message in str(caught.value)

    @pytest.mark.parametrize(
        "values",
        [
            ["serving.webConcurrency=null"],
            ["serving.webConcurrency=8"],
            ["app.metricsPort=0"],
            ["app.metricsPort=9090"],
            ['podDisruptionBudget.maxUnavailable="25%"'],
            ['redis.mode="external"', 'redis.external.url="rediss://user:pw@cache:6380/1"'],
            ["autoscaling.requestsPerSecond=12.5"],
            ['app.config={"OPSKIT_RATE_LIMIT":"10/second","OTEL_TRACES_SAMPLER":"parentbased_traceidratio"}'],
        ],
        ids=str,
    )
    def test_accepted(self, values: list[str]) -> None:
        """Valid neighbours of the rejected values still render (the rules are not too strict)."""
        assert render(set_json=values)

    def test_every_top_level_value_is_described_by_the_schema(self) -> None:
        """values.yaml and the schema list the same keys, so no value escapes validation."""
        schema = json.loads((CHART / "values.schema.json").read_text())
        values = yaml.safe_load((CHART / "values.yaml").read_text())
        assert set(values) == set(schema["properties"]) - {"global"}
        assert schema["additionalProperties"] is False
