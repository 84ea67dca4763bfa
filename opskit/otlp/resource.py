"""The resource every OTLP signal of a process carries: the service, its deployment, its worker."""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING

from opentelemetry.sdk.version import __version__ as sdk_version

from ..settings.otlp_export import parse_key_values

if TYPE_CHECKING:
    from ..settings import Settings

__all__ = ["instance_id", "resource_attributes"]

_instance: str | None = None


def instance_id() -> str:
    """This process's ``service.instance.id``: a random UUID, a new one in every forked worker.

    Each worker exports its own values; a backend keeps them apart (and adds them up) only when
    every worker names itself differently.
    """
    global _instance
    if _instance is None:
        _instance = str(uuid.uuid4())
    return _instance


def _forget_instance() -> None:
    global _instance
    _instance = None


os.register_at_fork(after_in_child=_forget_instance)


def resource_attributes(settings: Settings) -> dict[str, str | int]:
    """service.*, deployment.environment, k8s.* and the worker's service.instance.id, over
    ``OTEL_RESOURCE_ATTRIBUTES`` (a ``service.instance.id`` given there is kept)."""
    attributes: dict[str, str | int] = {
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": sdk_version,
    }
    attributes.update(parse_key_values(settings.resource_attributes))
    # OTEL_SERVICE_NAME wins over service.name in OTEL_RESOURCE_ATTRIBUTES; the default name does not.
    if settings.service_name != "unknown_service" or "service.name" not in attributes:
        attributes["service.name"] = settings.service_name
    if settings.service_version:
        attributes["service.version"] = settings.service_version
    if settings.environment:
        # The older name is what most backends still group by; the newer one is the stable convention.
        attributes["deployment.environment"] = settings.environment
        attributes["deployment.environment.name"] = settings.environment
    for key, value in (
        ("k8s.pod.name", settings.k8s_pod_name),
        ("k8s.namespace.name", settings.k8s_namespace_name),
        ("k8s.node.name", settings.k8s_node_name),
    ):
        if value:
            attributes[key] = value
    attributes.setdefault("service.instance.id", instance_id())
    attributes.setdefault("process.pid", os.getpid())
    return attributes
