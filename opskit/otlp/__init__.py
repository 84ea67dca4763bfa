"""What every OTLP exporter of opskit shares: the transport, the resource, the export thread.

The tracing, metrics and logs features each encode their own signal and hand the bytes to the
client :func:`~.transport.otlp_client` builds for it (OTLP/HTTP or gRPC); none imports another,
and all describe the process with the same resource (:func:`~.resource.resource_attributes`,
one ``service.instance.id`` per worker process).
"""

from __future__ import annotations

from .resource import instance_id, resource_attributes
from .thread import ExportThread
from .transport import (
    FAILURE_REASONS,
    ExportResult,
    OtlpClient,
    OtlpHttpClient,
    check_protocol,
    failure_reason,
    otlp_client,
    signal_endpoint,
)

__all__ = [
    "FAILURE_REASONS",
    "ExportResult",
    "ExportThread",
    "OtlpClient",
    "OtlpHttpClient",
    "check_protocol",
    "failure_reason",
    "instance_id",
    "otlp_client",
    "resource_attributes",
    "signal_endpoint",
]
