"""What every OTLP/HTTP exporter of opskit shares: the transport, the resource, the export thread.

The metrics and logs features each encode their own signal and hand the bytes to
:class:`~.transport.OtlpHttpClient`; neither imports the other, and both describe the process
with the same resource (:func:`~.resource.resource_attributes`, one ``service.instance.id`` per
worker process).
"""

from __future__ import annotations

from .resource import instance_id, resource_attributes
from .thread import ExportThread
from .transport import FAILURE_REASONS, ExportResult, OtlpHttpClient, failure_reason, signal_endpoint

__all__ = [
    "FAILURE_REASONS",
    "ExportResult",
    "ExportThread",
    "OtlpHttpClient",
    "failure_reason",
    "instance_id",
    "resource_attributes",
    "signal_endpoint",
]
