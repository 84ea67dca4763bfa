"""Provider set-up from the OTEL_* variables: exporter choice, resource, sampler, validation."""

from __future__ import annotations

from typing import Any, cast

import orjson
import pytest
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, TraceIdRatioBased
from starlette.testclient import TestClient

import opskit.tracing
from opskit.otlp import transport
from opskit.otlp.transport import otlp_client
from opskit.runtime import Runtime
from opskit.settings import ConfigError, load_settings
from opskit.tracing import create_component
from opskit.tracing.pipeline import build_resource, build_sampler
from tests.tracing.app import create
from tests.tracing.receiver import OtlpReceiver


class TestExporterChoice:
    def test_zero_config_exports_nothing(self) -> None:
        """With no OTEL_* variable set, the exporter is none."""
        assert load_settings().traces_exporter_resolved == "none"

    @pytest.mark.parametrize("var", ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"])
    def test_an_endpoint_implies_otlp(self, monkeypatch: pytest.MonkeyPatch, var: str) -> None:
        """Setting an OTLP endpoint is enough to export over OTLP."""
        monkeypatch.setenv(var, "http://collector:4318")
        assert load_settings().traces_exporter_resolved == "otlp"

    def test_explicit_none_wins_over_an_endpoint(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """OTEL_TRACES_EXPORTER=none switches export off even with an endpoint."""
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
        assert load_settings().traces_exporter_resolved == "none"

    def test_endpoints(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The base endpoint gets /v1/traces; the signal endpoint is used as given; defaults per protocol."""

        def endpoint(**overrides: Any) -> str:
            return otlp_client(load_settings(**overrides), "traces").endpoint

        assert endpoint(otlp_endpoint="http://c:4318/") == "http://c:4318/v1/traces"
        assert endpoint(otlp_traces_endpoint="http://c:9/x") == "http://c:9/x"
        assert endpoint(traces_exporter="otlp") == "http://localhost:4318/v1/traces"
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        assert endpoint() == "http://localhost:4317"

    def test_grpc_without_the_extra_fails_at_startup(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """OTLP over gRPC without opskit-asgi[grpc] installed names the variable and the fix."""
        monkeypatch.setattr(transport, "grpc_available", lambda: False)  # grpcio cannot be uninstalled here
        settings = load_settings(traces_exporter="otlp", otlp_traces_protocol="grpc")
        with pytest.raises(ConfigError, match=r"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL.*opskit-asgi\[grpc\]"):
            create_component(Runtime(settings))

    def test_console_exporter_writes_one_json_line_per_span(self, capfd: pytest.CaptureFixture[str]) -> None:
        """OTEL_TRACES_EXPORTER=console prints each span as one JSON object on one line."""
        c = TestClient(create(traces_exporter="console"))
        c.get("/items/1")
        c.get("/items/2")
        opskit.tracing.shutdown()
        lines = [orjson.loads(line) for line in capfd.readouterr().out.splitlines() if line.strip()]
        spans = [line for line in lines if "context" in line]  # the rest are log lines, JSON too
        assert [span["name"] for span in spans] == ["GET /items/{item_id}"] * 2
        assert [span["attributes"]["url.path"] for span in spans] == ["/items/1", "/items/2"]


class TestExport:
    def test_headers_and_gzip_reach_the_collector(self, receiver: OtlpReceiver) -> None:
        """OTEL_EXPORTER_OTLP_HEADERS are sent with each export; gzip compression is applied."""
        c = TestClient(
            create(
                otlp_endpoint=receiver.endpoint, otlp_traces_headers="x-api-key=k%2C1", otlp_traces_compression="gzip"
            )
        )
        c.get("/items/1")
        opskit.tracing.shutdown()
        [request] = receiver.requests
        assert request["path"] == "/v1/traces"
        assert request["x-api-key"] == "k,1"
        assert request["Content-Encoding"] == "gzip"
        assert [span.name for span in receiver.spans()] == ["GET /items/{item_id}"]


class TestValidation:
    @pytest.mark.parametrize(
        ("var", "value"),
        [
            ("OTEL_TRACES_EXPORTER", "zipkin"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://collector"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "-5"),
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
            ("OTEL_RESOURCE_ATTRIBUTES", "team"),
            ("OTEL_PYTHON_EXCLUDED_URLS", "/ok,(unclosed"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
            ("OPSKIT_TRACING_RESPONSE_HEADER", "yes"),
        ],
    )
    def test_bad_value_fails_naming_the_variable(self, monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
        """Each tracing knob rejects a bad value at startup with the variable's name in the message."""
        monkeypatch.setenv(var, value)
        with pytest.raises(ConfigError) as info:
            load_settings()
        stem = var.replace("_TRACES_", "_").replace("OTEL_EXPORTER_OTLP_", "")
        assert stem.split("_")[-1] in str(info.value)
        assert repr(value) in str(info.value)

    def test_headers_are_parsed_and_decoded(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """OTEL_EXPORTER_OTLP_HEADERS takes percent-encoded key=value pairs."""
        from opskit.settings.otlp_export import parse_key_values

        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cr%3Dt, x-team = core")
        assert parse_key_values(load_settings().otlp_traces_headers) == {"api-key": "s3cr=t", "x-team": "core"}


class TestResource:
    def test_service_environment_and_kubernetes(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """service.*, deployment.environment and k8s.* come from settings, the downward-API variables included."""
        monkeypatch.setenv("OTEL_SERVICE_NAME", "checkout")
        monkeypatch.setenv("OPSKIT_SERVICE_VERSION", "2.0.1")
        monkeypatch.setenv("OPSKIT_ENVIRONMENT", "staging")
        monkeypatch.setenv("K8S_POD_NAME", "checkout-7d9f-abcde")
        monkeypatch.setenv("K8S_NAMESPACE_NAME", "shop")
        monkeypatch.setenv("K8S_NODE_NAME", "node-3")
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "team=payments,service.name=ignored")
        attributes = dict(build_resource(load_settings()).attributes)
        assert attributes["service.name"] == "checkout"
        assert attributes["service.version"] == "2.0.1"
        assert attributes["deployment.environment"] == attributes["deployment.environment.name"] == "staging"
        assert attributes["k8s.pod.name"] == "checkout-7d9f-abcde"
        assert attributes["k8s.namespace.name"] == "shop"
        assert attributes["k8s.node.name"] == "node-3"
        assert attributes["team"] == "payments"
        assert attributes["telemetry.sdk.language"] == "python"

    def test_helm_chart_variables(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The chart's K8S_NAMESPACE and its OTEL_RESOURCE_ATTRIBUTES list are understood."""
        monkeypatch.setenv("K8S_NAMESPACE", "shop")
        monkeypatch.setenv(
            "OTEL_RESOURCE_ATTRIBUTES", "k8s.pod.name=api-1,k8s.pod.uid=0f9e-11,k8s.deployment.name=api,team=core"
        )
        attributes = dict(build_resource(load_settings()).attributes)
        assert attributes["k8s.namespace.name"] == "shop"
        assert (attributes["k8s.pod.uid"], attributes["k8s.deployment.name"]) == ("0f9e-11", "api")

    def test_resource_attributes_name_the_service_when_nothing_else_does(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without OTEL_SERVICE_NAME, service.name from OTEL_RESOURCE_ATTRIBUTES is kept; no empty k8s keys."""
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attributes")
        attributes = dict(build_resource(load_settings()).attributes)
        assert attributes["service.name"] == "from-attributes"
        assert not [key for key in attributes if key.startswith(("k8s.", "deployment.", "service.version"))]


class TestSampler:
    def test_samplers_by_name(self) -> None:
        """OTEL_TRACES_SAMPLER and _ARG build the matching SDK sampler."""
        assert build_sampler(load_settings(traces_sampler="always_on")) is ALWAYS_ON
        assert build_sampler(load_settings(traces_sampler="always_off")) is ALWAYS_OFF
        ratio = build_sampler(load_settings(traces_sampler="traceidratio", traces_sampler_arg=0.25))
        assert isinstance(ratio, TraceIdRatioBased) and ratio.rate == 0.25
        parent = build_sampler(load_settings(traces_sampler="parentbased_traceidratio", traces_sampler_arg=0.5))
        assert isinstance(parent, ParentBased)
        assert "0.5" in cast(Any, parent).get_description()

    def test_ratio_zero_exports_nothing_and_one_everything(self, receiver: OtlpReceiver) -> None:
        """parentbased_traceidratio at 0 samples no root request; at 1 every request."""
        for ratio, expected in ((0.0, 0), (1.0, 3)):
            c = TestClient(
                create(
                    otlp_endpoint=receiver.endpoint,
                    traces_sampler="parentbased_traceidratio",
                    traces_sampler_arg=ratio,
                )
            )
            for i in range(3):
                assert c.get(f"/items/{i}").status_code == 200
            opskit.tracing.shutdown()
            assert len(receiver.spans()) == expected

    def test_always_off_still_propagates_the_trace_id(self, receiver: OtlpReceiver) -> None:
        """An unsampled request records nothing but user code still sees a valid trace id."""
        c = TestClient(create(otlp_endpoint=receiver.endpoint, traces_sampler="always_off"))
        assert len(c.get("/items/1").json()["trace_id"].strip("0")) > 0
        opskit.tracing.shutdown()
        assert receiver.spans() == []


class TestFailSafe:
    def test_dead_collector_degrades_tracing_not_the_app(self) -> None:
        """With nothing listening at the endpoint, requests succeed and shutdown returns."""
        from tests.servers import free_port

        c = TestClient(
            create(otlp_endpoint=f"http://127.0.0.1:{free_port()}", otlp_traces_timeout_ms=200),
            raise_server_exceptions=True,
        )
        for i in range(5):
            assert c.get(f"/items/{i}").status_code == 200
        opskit.tracing.shutdown()
