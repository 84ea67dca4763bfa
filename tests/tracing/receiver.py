"""A real OTLP/HTTP receiver for the tests: decodes each export with opentelemetry-proto.

POSTs to a path ending in ``/v1/metrics`` or ``/v1/logs`` are metric or log exports; any other
path is a trace export.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.servers import free_port


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(v) for v in value.array_value.values)
    return getattr(value, kind) if kind else None


def attributes(items: Any) -> dict[str, Any]:
    """OTLP KeyValue list as a dict."""
    pairs: list[KeyValue] = list(items)
    return {kv.key: _value(kv.value) for kv in pairs}


@dataclass(frozen=True)
class ReceivedSpan:
    """One exported span with its resource, decoded."""

    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    status_code: int
    status_message: str
    events: list[tuple[str, dict[str, Any]]]
    start_ns: int
    end_ns: int
    trace_state: str

    @property
    def is_error(self) -> bool:
        return self.status_code == 2  # STATUS_CODE_ERROR


class OtlpReceiver:
    """Listens on a free loopback port; every POST to /v1/traces is decoded and kept.

    ``status`` other than 200 answers every export with that status (a failing collector) and keeps
    nothing; ``hang`` reads each export and never answers (until :meth:`close`).
    """

    def __init__(self, status: int = 200, hang: bool = False) -> None:
        self.port = free_port()
        self.requests: list[dict[str, str]] = []
        self.gets: list[dict[str, str]] = []  # lower-cased headers of each GET (outgoing calls of the app)
        self.attempts = 0
        self._spans: list[ReceivedSpan] = []
        self.metric_exports: list[ExportMetricsServiceRequest] = []  # every metric export, decoded
        self.log_exports: list[ExportLogsServiceRequest] = []  # every log export, decoded
        self._lock = threading.Lock()
        self._closing = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.attempts += 1
                if hang:
                    receiver._closing.wait(10)
                    return
                if status != 200:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                reply = receiver._receive(self.path, dict(self.headers.items()), body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def do_GET(self) -> None:
                with receiver._lock:
                    receiver.gets.append({k.lower(): v for k, v in self.headers.items()})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        """The base URL for OTEL_EXPORTER_OTLP_ENDPOINT."""
        return f"http://127.0.0.1:{self.port}"

    def _receive(self, path: str, headers: dict[str, str], body: bytes) -> bytes:
        if path.endswith("/v1/metrics"):
            metrics = ExportMetricsServiceRequest()
            metrics.ParseFromString(body)
            with self._lock:
                self.metric_exports.append(metrics)
                self.requests.append({"path": path, **headers})
            return bytes(ExportMetricsServiceResponse().SerializeToString())
        if path.endswith("/v1/logs"):
            logs = ExportLogsServiceRequest()
            logs.ParseFromString(body)
            with self._lock:
                self.log_exports.append(logs)
                self.requests.append({"path": path, **headers})
            return bytes(ExportLogsServiceResponse().SerializeToString())
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self._add(path, headers, request)
        return bytes(ExportTraceServiceResponse().SerializeToString())

    def _add(self, path: str, headers: dict[str, str], request: ExportTraceServiceRequest) -> None:
        received: list[ReceivedSpan] = []
        for resource_spans in request.resource_spans:
            resource = attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(self._decode(span, resource))
        with self._lock:
            self.requests.append({"path": path, **headers})
            self._spans.extend(received)

    @staticmethod
    def _decode(span: Span, resource: dict[str, Any]) -> ReceivedSpan:
        return ReceivedSpan(
            name=span.name,
            kind=span.kind,
            trace_id=span.trace_id.hex(),
            span_id=span.span_id.hex(),
            parent_span_id=span.parent_span_id.hex(),
            attributes=attributes(span.attributes),
            resource=resource,
            status_code=span.status.code,
            status_message=span.status.message,
            events=[(event.name, attributes(event.attributes)) for event in span.events],
            start_ns=span.start_time_unix_nano,
            end_ns=span.end_time_unix_nano,
            trace_state=span.trace_state,
        )

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        """Block until at least ``count`` spans arrived; return them all."""
        deadline = time.monotonic() + timeout
        while len(self.spans()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"expected {count} spans, received {len(self.spans())}")
            time.sleep(0.02)
        return self.spans()

    def metrics(self) -> list[ExportMetricsServiceRequest]:
        with self._lock:
            return list(self.metric_exports)

    def logs(self) -> list[ExportLogsServiceRequest]:
        with self._lock:
            return list(self.log_exports)

    def close(self) -> None:
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@contextmanager
def otlp_receiver(status: int = 200, hang: bool = False) -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver(status, hang)
    try:
        yield receiver
    finally:
        receiver.close()
