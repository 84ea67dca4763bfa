"""A real OTLP/HTTP receiver for the benchmark: every variant that exports over OTLP sends to one.

``python -m bench.receiver PORT MARKER`` answers ``POST /v1/traces``, ``/v1/metrics`` and
``/v1/logs`` as a collector does: it reads the (possibly gzipped) body, decodes it with
opentelemetry-proto and answers the empty export response. The first batch of spans touches
``MARKER``, the first metrics or logs ``MARKER.otlp``, so the harness can tell each export really
ran. The harness pins it to the load generator's core, so its decoding is not charged to the
server under test.
"""

from __future__ import annotations

import gzip
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

__all__ = ["serve"]

# path -> (request type, serialized empty response, whether the first batch marks MARKER or MARKER.otlp)
_SIGNALS: dict[str, tuple[Any, bytes, str]] = {
    "/v1/traces": (ExportTraceServiceRequest, ExportTraceServiceResponse().SerializeToString(), ""),
    "/v1/metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse().SerializeToString(), ".otlp"),
    "/v1/logs": (ExportLogsServiceRequest, ExportLogsServiceResponse().SerializeToString(), ".otlp"),
}


def serve(port: int, marker: Path) -> None:
    """Receive spans on ``127.0.0.1:port`` until killed."""
    marked: set[str] = set()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            signal = _SIGNALS.get(self.path)
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            request = signal[0]() if signal is not None else None
            try:
                if request is None:
                    raise ValueError(self.path)
                request.ParseFromString(body)
            except Exception:  # not OTLP: a collector answers 400 (404 for an unknown path would do too)
                self.send_response(400)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            assert signal is not None
            _, response, suffix = signal
            if body and suffix not in marked:
                marked.add(suffix)
                marker.with_name(marker.name + suffix).touch()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(response)))
            self.end_headers()
            self.wfile.write(response)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    serve(int(sys.argv[1]), Path(sys.argv[2]))
