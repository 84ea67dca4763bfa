"""A real OTLP/HTTP trace receiver for the benchmark: every tracing variant exports to one.

``python -m bench.receiver PORT MARKER`` answers ``POST /v1/traces`` as a collector does: it reads
the (possibly gzipped) body, decodes it as an ``ExportTraceServiceRequest`` with
opentelemetry-proto, counts the spans and answers an empty ``ExportTraceServiceResponse``. The
first batch with spans touches ``MARKER``, so the harness can tell tracing really ran. The harness
pins it to the load generator's core, so its decoding is not charged to the server under test.
"""

from __future__ import annotations

import gzip
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

__all__ = ["serve"]

_RESPONSE = ExportTraceServiceResponse().SerializeToString()


def _spans(request: ExportTraceServiceRequest) -> int:
    return sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)


def serve(port: int, marker: Path) -> None:
    """Receive spans on ``127.0.0.1:port`` until killed."""
    received = [0]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            request = ExportTraceServiceRequest()
            try:
                request.ParseFromString(body)
            except Exception:  # not OTLP: a collector answers 400
                self.send_response(400)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            spans = _spans(request)
            if spans and not received[0]:
                marker.touch()
            received[0] += spans
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(_RESPONSE)))
            self.end_headers()
            self.wfile.write(_RESPONSE)

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
