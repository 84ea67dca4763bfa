"""A direct OTLP protobuf encoder for opskit's request spans, and the exporter that sends it (HTTP or gRPC).

The SDK's encoder builds a tree of protobuf message objects for every span, about 36 µs of CPU per
request span, on the worker's export thread. Request spans have a known, flat shape (no links),
so their wire bytes are written directly: by the compiled encoder (:func:`opskit.otlp.native.span`)
when the install has it, else (and for what it declines: a trace state, events) by :func:`_span`,
which caches the encodings of repeated attribute pairs (method, route, scheme, user agent...). The
resource and the scope are encoded once. Any other span (user code's, outbound instrumentation's)
still goes through the SDK's encoder; the byte strings are concatenated, which protobuf defines as
merging their repeated ``resource_spans``.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ..otlp import native
from ..otlp.transport import OtlpClient
from ..otlp.wire import field as _field
from ..otlp.wire import fixed32 as _fixed32
from ..otlp.wire import fixed64 as _fixed64
from ..otlp.wire import varint as _varint

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

__all__ = ["RequestSpanEncoder", "RequestSpanExporter"]


log = logging.getLogger("opskit.tracing")

CACHE_MAX = 4096
#: The compiled span encoder, ``None`` when the install has none (or a test switches it off).
native_span = native.span
_SPAN_FLAGS_HAS_IS_REMOTE = 0x100
_SPAN_FLAGS_IS_REMOTE = 0x200
_double = struct.Struct("<d").pack


def _any_value(value: Any) -> bytes:
    if isinstance(value, str):
        return _field(1, value.encode("utf-8", "replace"))
    if isinstance(value, bool):
        return b"\x10" + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _double(value)
    if isinstance(value, (tuple, list)):
        return _field(5, b"".join(_field(1, _any_value(item)) for item in value))
    return _field(1, str(value).encode("utf-8", "replace"))


_keys: dict[str, bytes] = {}


def _key_value(key: str, value: Any) -> bytes:
    encoded_key = _keys.get(key)
    if encoded_key is None:
        encoded_key = _field(1, key.encode("utf-8", "replace"))
        if len(_keys) >= CACHE_MAX:
            _keys.clear()
        _keys[key] = encoded_key
    return encoded_key + _field(2, _any_value(value))


# Values unique to (almost) every request: caching them would only churn the cache.
UNCACHED_KEYS = frozenset({"url.path", "request_id", "client.address", "exception.message", "exception.stacktrace"})


class _Cache:
    """Encoded KeyValue fields (tagged with ``number``) by key and value; bounded: cleared whole when full."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.pairs: dict[tuple[str, type, Any], bytes] = {}

    def attributes(self, attributes: Any) -> bytes:
        pairs = self.pairs
        out = []
        for key, value in attributes.items():
            if key in UNCACHED_KEYS or isinstance(value, list):
                out.append(_field(self.number, _key_value(key, value)))
                continue
            # The type is part of the key: True == 1 and 1 == 1.0, but they encode differently.
            cache_key = (key, type(value), value)
            encoded = pairs.get(cache_key)
            if encoded is None:
                encoded = _field(self.number, _key_value(key, value))
                if len(pairs) >= CACHE_MAX:
                    pairs.clear()
                pairs[cache_key] = encoded
            out.append(encoded)
        return b"".join(out)


def _event(event: Event, cache: _Cache) -> bytes:
    body = b"\x09" + _fixed64(event.timestamp) + _field(2, event.name.encode("utf-8", "replace"))
    if event.attributes:
        body += cache.attributes(event.attributes)
    return _field(11, body)


# The kind and status fields by enum value (``_value_``: a plain attribute, where ``.value`` is a
# descriptor call per span); an unset status with no description is the same two bytes every time.
_KINDS = [b"\x30" + _varint(value + 1) for value in range(5)]
_UNSET_STATUS = b"\x7a\x00"
_FLAGS_LOCAL = b"\x85\x01" + _fixed32(_SPAN_FLAGS_HAS_IS_REMOTE)
_FLAGS_REMOTE = b"\x85\x01" + _fixed32(_SPAN_FLAGS_HAS_IS_REMOTE | _SPAN_FLAGS_IS_REMOTE)


def _span(span: ReadableSpan, cache: _Cache, event_cache: _Cache) -> bytes:
    context = span.context
    parts = [
        b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + context.span_id.to_bytes(8, "big"),
    ]
    if context.trace_state:
        parts.append(_field(3, ",".join(f"{k}={v}" for k, v in context.trace_state.items()).encode()))
    parent = span.parent
    if parent is not None:
        parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    parts.append(_field(5, span.name.encode("utf-8", "replace")))
    kind: int = span.kind._value_
    parts.append(_KINDS[kind] if 0 <= kind < len(_KINDS) else b"\x30" + _varint(kind + 1))
    parts.append(b"\x39" + _fixed64(span.start_time or 0))
    parts.append(b"\x41" + _fixed64(span.end_time or 0))
    attributes = span.attributes
    if attributes:
        parts.append(cache.attributes(attributes))
    for event in span.events:
        parts.append(_event(event, event_cache))
    status = span.status
    code: int = status.status_code._value_
    if not code and not status.description:
        parts.append(_UNSET_STATUS)  # present even when empty, as the SDK's encoder writes it
    else:
        body = b""
        if status.description:
            body += _field(2, status.description.encode("utf-8", "replace"))
        if code:
            body += b"\x18" + _varint(code)
        parts.append(_field(15, body))
    parts.append(_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL)
    return _field(2, b"".join(parts))


class RequestSpanEncoder:
    """Encodes an ExportTraceServiceRequest; spans of ``scope`` directly, others with the SDK."""

    def __init__(self, scope: InstrumentationScope) -> None:
        self.scope = scope
        self._cache = _Cache(9)  # Span.attributes
        self._event_cache = _Cache(3)  # Span.Event.attributes
        self._head: tuple[Resource, bytes] | None = None
        encoded_scope = _field(1, scope.name.encode())
        if scope.version:
            encoded_scope += _field(2, scope.version.encode())
        self._scope_head = _field(1, encoded_scope)

    def _resource(self, resource: Resource) -> bytes:
        # By identity: a Resource's hash serializes all its attributes to JSON (one per process in practice).
        if self._head is not None and self._head[0] is resource:
            return self._head[1]
        head = _field(1, _Cache(1).attributes(resource.attributes))
        if resource.schema_url:
            head += _field(3, resource.schema_url.encode())
        self._head = (resource, head)
        return head

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        """The serialized request for ``spans``."""
        # Grouped by the resource's identity, not its (costly) hash: the spans of a process share one.
        ours: dict[int, tuple[Resource, list[bytes]]] = {}
        others: list[ReadableSpan] = []
        cache, event_cache = self._cache, self._event_cache
        compiled = native_span
        for span in spans:
            if span.instrumentation_scope is self.scope and not span.links:
                resource = span.resource
                group = ours.get(id(resource))
                if group is None:
                    group = ours[id(resource)] = (resource, [])
                encoded = compiled(span) if compiled is not None else None
                group[1].append(encoded if encoded is not None else _span(span, cache, event_cache))
            else:
                others.append(span)
        out = [self._resource_spans(resource, encoded) for resource, encoded in ours.values()]
        if others:
            out.append(encode_spans(others).SerializePartialToString())
        return b"".join(out)

    def _resource_spans(self, resource: Resource, encoded: Iterable[bytes]) -> bytes:
        head = self._resource(resource)
        scope_spans = _field(2, self._scope_head + b"".join(encoded))
        return _field(1, head + scope_spans)


class RequestSpanExporter(SpanExporter):
    """Sends span batches through opskit's OTLP client (HTTP or gRPC: retries, compression, headers,
    timeout), encoded by :class:`RequestSpanEncoder`."""

    def __init__(self, client: OtlpClient, *, scope: InstrumentationScope) -> None:
        self.client = client
        self._encoder = RequestSpanEncoder(scope)
        self._shutdown = False
        # Why the last batch failed, for the export counters (read on the same export thread).
        self.last_failure: str | None = None
        self.last_failure_detail: str | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.last_failure = self.last_failure_detail = None
        if self._shutdown:
            return SpanExportResult.FAILURE
        try:
            data = self._encoder.encode(spans)
        except Exception:  # never lose a batch to the fast path: the SDK's encoder takes over
            log.warning("tracing: direct span encoding failed; using the SDK encoder", exc_info=True)
            data = encode_spans(spans).SerializePartialToString()
        result = self.client.export(data)
        if result.ok:
            return SpanExportResult.SUCCESS
        self.last_failure = result.reason or "other"
        self.last_failure_detail = result.detail or None
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self._shutdown = True
        self.client.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
