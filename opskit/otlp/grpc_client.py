"""OTLP over gRPC: one unary ``Export`` call per export, on one channel, with the shared retry policy.

The request is the same serialized ``Export*ServiceRequest`` an OTLP/HTTP export POSTs: grpcio's
generic unary call sends the bytes as they are (no serializer), so opskit's own encoders serve
both protocols and no generated stub is needed. Needs grpcio (``pip install 'opskit-asgi[grpc]'``);
only this module imports it, when a client is built (the module itself imports without it).

Importing this module sets ``GRPC_VERBOSITY=ERROR`` unless it is set already: grpcio's C core
otherwise writes INFO lines of its own to stderr (``Got goaway`` when a collector closes a
connection), which are not JSON and break the process's one-object-per-line log stream. The
C core reads the variable once, when grpc is imported: an app that imported grpc earlier keeps
whatever it had then.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .transport import Attempt, ExportResult, RetryingClient, Signal

if TYPE_CHECKING:
    import grpc

__all__ = ["METHODS", "RETRYABLE_CODES", "OtlpGrpcClient"]

METHODS: dict[Signal, str] = {
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
}
# The status codes the OTLP specification calls transient (RESOURCE_EXHAUSTED only with RetryInfo: not retried).
RETRYABLE_CODES = frozenset({"CANCELLED", "DEADLINE_EXCEEDED", "ABORTED", "OUT_OF_RANGE", "UNAVAILABLE", "DATA_LOSS"})
_REASONS = {"DEADLINE_EXCEEDED": "timeout", "UNAVAILABLE": "connection"}

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


class OtlpGrpcClient(RetryingClient):
    """Calls one signal's ``Export`` method on an OTLP/gRPC endpoint (``http://`` plaintext, ``https://`` TLS)."""

    def __init__(
        self,
        endpoint: str,
        signal: Signal,
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
        compression: str = "none",
    ) -> None:
        import grpc

        self._grpc = grpc
        self.endpoint = endpoint
        self.timeout = timeout
        parts = urlsplit(endpoint if "//" in endpoint else f"http://{endpoint}")
        target = parts.netloc.rpartition("@")[2] or "localhost:4317"
        options = [("grpc.primary_user_agent", "opskit")]
        level = grpc.Compression.Gzip if compression == "gzip" else grpc.Compression.NoCompression
        if parts.scheme == "https":
            self._channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(), options, level)
        else:
            self._channel = grpc.insecure_channel(target, options, level)
        # gRPC metadata keys are lower case.
        self._metadata = tuple((key.lower(), value) for key, value in (headers or {}).items())
        # No serializers: the request goes as the bytes given, the response comes back as bytes.
        self._call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(METHODS[signal])

    def _attempt(self, data: bytes, remaining: float, number: int) -> Attempt:
        grpc = self._grpc
        try:
            self._call(data, timeout=remaining, metadata=self._metadata, wait_for_ready=False)
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else None
            name = code.name if code is not None else type(error).__name__
            result = ExportResult(False, _REASONS.get(name, "other"), name, number)
            return Attempt(result, retry=name in RETRYABLE_CODES)
        except Exception as error:  # any transport failure is one export's failure, never the caller's
            return Attempt(ExportResult(False, "other", type(error).__name__, number))
        return Attempt(ExportResult(True, attempts=number))

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()
