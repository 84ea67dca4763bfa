"""The least each feature could do: pure ASGI middlewares that every target is read against.

Each floor does only what no implementation of its feature can avoid, in the cheapest way this
machine allows, so that "how far is opskit from bare" splits into what the feature must cost here
and what opskit adds on top:

- request ID: set a context variable, add one constant response header;
- access log: one JSON line per request (a constant but for the path), written in one batch per
  event-loop iteration;
- metrics: one counter increment, served on ``/metrics``;
- tracing: one span with fixed attributes, recorded as a tuple on the loop; a thread encodes the
  batches with opentelemetry-proto and posts them to the OTLP receiver;
- rate limit: one pipelined Redis call (``EVALSHA`` of a script returning 1) on one connection.
"""

from __future__ import annotations

import asyncio
import atexit
import http.client
import os
import random
import threading
import time
from collections import deque
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

__all__ = ["FLOORS", "AccessLogFloor", "LimiterFloor", "MetricsFloor", "RequestIdFloor", "TracingFloor"]

_FLOOR_ID: ContextVar[str | None] = ContextVar("bench_floor_request_id", default=None)
_FLOOR_HEADER = (b"x-request-id", b"0123456789abcdef0123456789abcdef")


class RequestIdFloor:
    """Set a context variable, add one response header; no parsing, no validation, no generation."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = _FLOOR_ID.set(_FLOOR_HEADER[1].decode())

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), _FLOOR_HEADER]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _FLOOR_ID.reset(token)


class AccessLogFloor:
    """One JSON line per request to stdout, the lines of one loop iteration in one write."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._pending: list[bytes] = []

    def _flush(self) -> None:
        data = b"".join(self._pending)
        self._pending.clear()
        os.write(1, data)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)
        if scope["type"] == "http":
            if not self._pending:
                asyncio.get_running_loop().call_soon(self._flush)
            path = scope["path"].encode("ascii", "replace")
            self._pending.append(b'{"event":"request","method":"GET","path":"' + path + b'","status":200}\n')


class MetricsFloor:
    """One counter increment per request; ``/metrics`` serves the count."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/metrics":
            body = f"# TYPE http_requests_total counter\nhttp_requests_total {self.requests}\n".encode()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
        self.requests += 1


def _attribute(key: str, value: str | int) -> KeyValue:
    any_value = AnyValue(int_value=value) if isinstance(value, int) else AnyValue(string_value=value)
    return KeyValue(key=key, value=any_value)


_SPAN_ATTRIBUTES = [
    _attribute("http.request.method", "GET"),
    _attribute("http.route", "/items/{item_id}"),
    _attribute("http.response.status_code", 200),
]


class TracingFloor:
    """One span per request with fixed attributes: a tuple on the loop, encoded and sent by a thread."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._spans: deque[tuple[int, int, int, int]] = deque(maxlen=2048)
        self._wake = threading.Event()  # set by the first span after a drain: no span waits long
        target = urlsplit(os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"])
        self._host, self._port = target.hostname or "127.0.0.1", target.port or 4318
        threading.Thread(target=self._export_forever, name="tracing-floor", daemon=True).start()
        atexit.register(self._flush)  # what the thread has not sent yet, as a batch processor does at exit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.time_ns()
        await self.app(scope, receive, send)
        spans = self._spans
        spans.append((random.getrandbits(128), random.getrandbits(64), start, time.time_ns()))
        if len(spans) == 1:
            self._wake.set()

    def _export_forever(self) -> None:
        connection = http.client.HTTPConnection(self._host, self._port, timeout=5)
        while True:
            self._wake.wait(0.2)
            self._wake.clear()
            time.sleep(0.05)  # let a batch gather
            self._send(connection)

    def _flush(self) -> None:
        self._send(http.client.HTTPConnection(self._host, self._port, timeout=5))

    def _send(self, connection: http.client.HTTPConnection) -> None:
        batch = [self._spans.popleft() for _ in range(len(self._spans))]
        if not batch:
            return
        spans = [
            Span(
                trace_id=trace.to_bytes(16, "big"),
                span_id=span.to_bytes(8, "big"),
                name="GET /items/{item_id}",
                kind=Span.SPAN_KIND_SERVER,
                start_time_unix_nano=start,
                end_time_unix_nano=end,
                attributes=_SPAN_ATTRIBUTES,
            )
            for trace, span, start, end in batch
        ]
        request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])])
        try:
            connection.request(
                "POST",
                "/v1/traces",
                body=request.SerializeToString(),
                headers={"Content-Type": "application/x-protobuf"},
            )
            connection.getresponse().read()
        except (OSError, http.client.HTTPException):
            connection.close()


_SCRIPT = b"return 1"


def _command(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)


class LimiterFloor:
    """One pipelined ``EVALSHA`` per request on one Redis connection, replies matched in order."""

    def __init__(self, app: Any) -> None:
        self.app = app
        target = urlsplit(os.environ["BENCH_REDIS_URL"])
        self._host, self._port = target.hostname or "127.0.0.1", target.port or 6379
        self._writer: asyncio.StreamWriter | None = None
        self._waiting: deque[asyncio.Future[bytes]] = deque()
        self._connecting: asyncio.Lock | None = None
        self._call = b""

    async def _connect(self) -> asyncio.StreamWriter:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._writer is None:
                reader, writer = await asyncio.open_connection(self._host, self._port)
                writer.write(_command(b"SCRIPT", b"LOAD", _SCRIPT))
                sha = (await reader.readline()) and (await reader.readline()).strip()
                self._call = _command(b"EVALSHA", sha, b"1", b"floor")
                asyncio.get_running_loop().create_task(self._read(reader))
                self._writer = writer
        return self._writer

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            line = await reader.readline()
            if not line:
                return
            self._waiting.popleft().set_result(line)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            writer = self._writer or await self._connect()
            reply = asyncio.get_running_loop().create_future()
            self._waiting.append(reply)
            writer.write(self._call)
            await reply
        await self.app(scope, receive, send)


#: The floor middleware of each reference feature name.
FLOORS: dict[str, Any] = {
    "request_id_floor": RequestIdFloor,
    "access_log_floor": AccessLogFloor,
    "metrics_floor": MetricsFloor,
    "tracing_floor": TracingFloor,
    "ratelimit_floor": LimiterFloor,
}
