"""Run the real ``helm`` on the opskit chart and read what it renders."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tests.servers import ROOT, which

CHART = ROOT / "helm" / "opskit"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
CRD_SCHEMAS = Path(__file__).parent / "crd_schemas"
# The API versions of the CRDs the chart may render, as a cluster with prometheus-operator and KEDA lists them.
MONITORING_APIS = (
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
    "keda.sh/v1alpha1/ScaledObject",
)
KUBERNETES_VERSION = "1.30"
RELEASE = "shop"
NAMESPACE = "apps"

Manifest = dict[str, Any]


class HelmError(Exception):
    """helm exited non-zero; the message is its stderr."""


def helm(*args: str | Path) -> str:
    """Run helm; its stdout, or :class:`HelmError` with its stderr."""
    result = subprocess.run([which("helm"), *map(str, args)], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise HelmError(result.stderr)
    return result.stdout


def render(
    *values_files: Path,
    set_values: Sequence[str] = (),
    set_json: Sequence[str] = (),
    api_versions: Sequence[str] = MONITORING_APIS,
    show_only: str | None = None,
) -> list[Manifest]:
    """``helm template`` the chart; the rendered objects (tests/ hook pods included)."""
    args: list[str | Path] = ["template", RELEASE, CHART, "--namespace", NAMESPACE, "--kube-version", "1.30.0"]
    for path in values_files:
        args += ["-f", path]
    for item in set_values:
        args += ["--set", item]
    for item in set_json:
        args += ["--set-json", item]
    for api in api_versions:
        args += ["--api-versions", api]
    if show_only:
        args += ["--show-only", show_only]
    return [doc for doc in yaml.safe_load_all(helm(*args)) if doc]


@cache
def render_scenario(path: Path) -> tuple[Manifest, ...]:
    """A ci/*-values.yaml scenario, rendered once per test session."""
    return tuple(render(path))


def find(manifests: Sequence[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)]


def one(manifests: Sequence[Manifest], kind: str) -> Manifest:
    found = find(manifests, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def app_container(manifests: Sequence[Manifest]) -> Manifest:
    deployment = one(manifests, "Deployment")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return dict(next(c for c in containers if c["name"] == "app"))


def container_env(manifests: Sequence[Manifest]) -> dict[str, Manifest]:
    """The app container's env, by variable name."""
    return {item["name"]: item for item in app_container(manifests).get("env", [])}


@cache
def _crd_schema(kind: str) -> dict[str, Any]:
    path = next(CRD_SCHEMAS.glob(f"{kind.lower()}-*.json"))
    return dict(json.loads(path.read_text()))


def validate_custom_resource(manifest: Manifest) -> None:
    """Validate a CRD object against the schema written from its CRD (tests/helm/crd_schemas/)."""
    jsonschema.validate(manifest, _crd_schema(manifest["kind"]), cls=jsonschema.Draft202012Validator)


CUSTOM_KINDS = ("ServiceMonitor", "PrometheusRule", "HTTPRoute", "ScaledObject")
