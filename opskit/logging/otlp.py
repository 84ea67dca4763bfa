"""OTLP logs: every line the process writes leaves as an OTLP log record too, batched off the loop.

``OTEL_LOGS_EXPORTER=otlp`` taps the process's one line writer, which every line passes: the
app's structlog loggers, the stdlib bridge (libraries, uvicorn, gunicorn) and the access log.
The tap costs the writing thread a clock read and a queue append; the export thread turns the
queued lines into log records: ``level`` gives the severity, ``event`` the body, ``trace_id``
and ``span_id`` the record's trace context, every other key an attribute. The queue is bounded
(``OTEL_BLRP_MAX_QUEUE_SIZE``); a line that finds it full is dropped and counted, as are the
records of an export that failed. stdout keeps its lines unless ``OPSKIT_LOG_STDOUT=false``.

The records are written in protobuf wire format directly (see :mod:`opskit.otlp.wire`): a log
line is the most frequent thing opskit exports, and building generated message objects per
line would cost several times more.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import struct
import threading
import time
import weakref
from collections import deque
from itertools import compress, repeat
from operator import is_
from typing import TYPE_CHECKING, Any

import orjson

from ..component import Component
from ..otlp import FAILURE_REASONS, ExportThread, OtlpClient, check_protocol, otlp_client, resource_attributes
from ..otlp.wire import any_value, field, fixed64, key_values, varint
from ..throttle import ThrottledLog
from ..version import VERSION
from .writer import WRITER

if TYPE_CHECKING:
    from ..metrics.registry import Registry
    from ..runtime import Runtime
    from ..settings import Settings

__all__ = ["DROP_REASONS", "LogQueue", "OtlpLogs", "OtlpLogsComponent", "create_component", "encode_record"]

log = logging.getLogger("opskit.logging")

SCOPE = "opskit.logging"
DROP_REASONS = ("queue_full", "export_failed", "shutdown")
LOG_INTERVAL = 60.0
# SeverityNumber of each level name opskit writes (structlog's and the stdlib's).
SEVERITY = {
    "trace": 1,
    "debug": 5,
    "info": 9,
    "notice": 10,
    "warn": 13,
    "warning": 13,
    "error": 17,
    "exception": 17,
    "critical": 21,
    "fatal": 21,
}
# Keys that are fields of the record, never attributes (the line's own timestamp: the tap's clock read is used).
_FIELDS = frozenset({"timestamp", "level", "event", "trace_id", "span_id"})
_SKIPPED = frozenset({"timestamp", "trace_id", "span_id"})  # read from the parsed line, or not at all
# Values unique to (almost) every line: caching their encodings would only churn the cache.
UNCACHED_KEYS = frozenset({"request_id", "path", "duration_ms", "response_bytes", "exception"})
CACHE_MAX = 4096
_CACHED_TEXT = 256  # longer strings are encoded each time

_double = struct.Struct("<d").pack
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError
_INT64 = 1 << 63
_keys: dict[str, bytes] = {}
# (key, string value) -> the pair's encoding. Only string values are held, so a hit is exact:
# ("n", 1), ("n", 1.0) and ("n", True) are equal tuples, but none of them equals ("n", "1").
_strings: dict[tuple[str, str], bytes] = {}
_pairs: dict[tuple[str, type, Any], bytes] = {}  # ints and bools, the type in the key
_levels: dict[str, bytes] = {}
_strings_get = _strings.get


def _hex_id(value: Any, length: int) -> bytes | None:
    if type(value) is not str or len(value) != length:
        return None
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return None
    # fromhex skips spaces: a shorter result was not ``length`` hex digits. All zeros is no ID.
    return raw if len(raw) * 2 == length and any(raw) else None


def _remember(cache: dict[Any, bytes], key: Any, encoded: bytes) -> bytes:
    if len(cache) >= CACHE_MAX:
        cache.clear()  # bounded: cleared whole when full
    cache[key] = encoded
    return encoded


def _attribute_uncached(key: str, value: Any) -> bytes:
    """``LogRecord.attributes`` (field 6) holding one KeyValue, in one piece when every length fits a byte."""
    encoded_key = _keys.get(key)
    if encoded_key is None:
        encoded_key = _remember(_keys, key, field(1, key.encode("utf-8", "replace")))
    kind = type(value)
    if kind is str:
        raw: bytes = value.encode("utf-8", "replace")
        size = len(raw)
        total = len(encoded_key) + size + 4
        if total < 0x80:
            return bytes((0x32, total)) + encoded_key + bytes((0x12, size + 2, 0x0A, size)) + raw
    elif kind is float and len(encoded_key) < 0x70:
        return bytes((0x32, len(encoded_key) + 11)) + encoded_key + b"\x12\x09\x21" + _double(value)
    elif kind is int and 0 <= value < _INT64 and len(encoded_key) < 0x70:
        number = varint(value)
        size = len(number)
        return bytes((0x32, len(encoded_key) + 3 + size)) + encoded_key + bytes((0x12, size + 1, 0x18)) + number
    return field(6, encoded_key + field(2, any_value(value)))


def _level(level: str) -> bytes:
    found = _levels.get(level)
    if found is None:
        severity = SEVERITY.get(level.lower(), 0)
        encoded = (b"\x10" + varint(severity) if severity else b"") + field(3, level.upper().encode("utf-8", "replace"))
        found = _remember(_levels, level, encoded)
    return found


def _missed(key: str, value: Any, out: list[bytes]) -> None:
    """Append the encoding of a pair the string cache did not hold (and remember it when it repeats)."""
    kind = type(value)
    if key in _FIELDS:
        if key == "level":
            if kind is str:
                encoded = _level(value)
                out.append(_remember(_strings, (key, value), encoded) if len(value) < _CACHED_TEXT else encoded)
        elif key == "event" and value is not None:
            if kind is str and len(value) < _CACHED_TEXT:
                out.append(_remember(_strings, (key, value), field(5, any_value(value))))
            else:
                out.append(field(5, any_value(value)))
        return
    if kind is int or kind is bool:
        found = _pairs.get((key, kind, value))
        if found is None:
            found = _remember(_pairs, (key, kind, value), _attribute_uncached(key, value))
        out.append(found)
    elif key in UNCACHED_KEYS:
        out.append(_attribute_uncached(key, value))
    elif kind is str:
        encoded = _attribute_uncached(key, value)
        out.append(_remember(_strings, (key, value), encoded) if len(value) < _CACHED_TEXT else encoded)
    else:
        out.append(_attribute_uncached(key, value))


def encode_record(time_ns: int, line: bytes) -> bytes:
    """The fields of one ``LogRecord`` for a written line (a JSON object, or any other text).

    Encodings of repeated string pairs (level, logger, event, method, route...) are cached,
    bounded, and looked up for the whole line at once (``map`` over the parsed pairs, no Python
    step per pair); only the pairs it misses (IDs, paths, numbers, new values) are encoded one by one.
    The cost per line is measured by ``bench/logs_micro.py``.
    """
    try:
        parsed = _loads(line)
    except _JSONDecodeError:
        parsed = None
    stamp = fixed64(time_ns)
    out = [b"\x09", stamp, b"\x59", stamp]  # time_unix_nano, observed_time_unix_nano
    if type(parsed) is not dict:
        out.append(field(5, field(1, line.rstrip(b"\r\n"))))  # body: the line as text
        return b"".join(out)
    items = list(parsed.items())
    try:
        found = list(map(_strings_get, items))
    except TypeError:  # a list or an object among the values: nothing to look up whole
        found = [None] * len(items)
    out.extend(filter(None, found))
    if None in found:
        append = out.append
        keys_get = _keys.get
        pairs_get = _pairs.get
        # Inline, the common misses: unique strings (path, request ID), numbers, the skipped record fields.
        for key, value in compress(items, map(is_, found, repeat(None))):
            kind = type(value)
            if kind is str:
                if key in _SKIPPED:
                    continue
                head = keys_get(key)
                if head is not None and key in UNCACHED_KEYS:
                    raw = value.encode("utf-8", "replace")
                    size = len(raw)
                    total = len(head) + size + 4
                    if total < 0x80:
                        append(bytes((0x32, total)) + head + bytes((0x12, size + 2, 0x0A, size)) + raw)
                        continue
            elif kind is float:
                head = keys_get(key)
                if head is not None and len(head) < 0x70:
                    append(bytes((0x32, len(head) + 11)) + head + b"\x12\x09\x21" + _double(value))
                    continue
            elif kind is int:
                # The type is part of the cache key: True == 1, but they encode differently.
                encoded = pairs_get((key, int, value))
                if encoded is not None:
                    append(encoded)
                    continue
            _missed(key, value, out)
        trace_id = _hex_id(parsed.get("trace_id"), 32)
        if trace_id is not None:
            out.append(b"\x4a\x10" + trace_id)
            span_id = _hex_id(parsed.get("span_id"), 16)
            if span_id is not None:
                out.append(b"\x52\x08" + span_id)
    return b"".join(out)


class LogQueue:
    """The bounded queue between the writing threads and the export thread.

    :meth:`put` is the writer's tap: a clock read and a deque append; a line that finds the
    queue full is dropped and counted. ``wake`` is called when a full batch is waiting.
    """

    def __init__(self, max_size: int, batch_size: int, dropped: Any, wake: Any = None) -> None:
        self.max_size = max_size
        self.batch_size = batch_size
        self.dropped = dropped  # counter with a `reason` label
        self.wake = wake
        self._items: deque[tuple[int, bytes]] = deque()
        _queues.add(self)

    def __len__(self) -> int:
        return len(self._items)

    def put(self, line: bytes) -> None:
        items = self._items
        size = len(items)
        if size >= self.max_size:
            self.dropped.labels("queue_full").inc()
            return
        items.append((time.time_ns(), line))
        if size + 1 == self.batch_size and self.wake is not None:
            self.wake()

    def take(self, count: int) -> list[tuple[int, bytes]]:
        """Up to ``count`` of the oldest lines, removed from the queue."""
        items = self._items
        out: list[tuple[int, bytes]] = []
        while items and len(out) < count:
            out.append(items.popleft())
        return out

    def clear(self) -> None:
        self._items.clear()


_queues: weakref.WeakSet[LogQueue] = weakref.WeakSet()


def _forget_parent_lines() -> None:
    for queue in list(_queues):
        queue.clear()  # the parent's lines are the parent's to export


os.register_at_fork(after_in_child=_forget_parent_lines)


class OtlpLogs:
    """Drains a :class:`LogQueue` into ``ExportLogsServiceRequest`` batches; counts how they went."""

    def __init__(self, settings: Settings, registry: Registry, client: OtlpClient | None = None) -> None:
        self.settings = settings
        self.client = client or otlp_client(settings, "logs")
        self._exported = registry.counter("opskit_log_records_exported_total", "Log records the collector accepted.")
        self._failures = registry.counter(
            "opskit_log_export_failures_total",
            "Failed log export batches by reason (timeout, connection, http_4xx, http_5xx, http_other, other).",
            ["reason"],
        )
        self._dropped = registry.counter(
            "opskit_log_records_dropped_total",
            "Log records lost before reaching the collector, by reason (queue_full, export_failed, shutdown).",
            ["reason"],
        )
        self._exported.labels()
        for reason in FAILURE_REASONS:
            self._failures.labels(reason)
        for reason in DROP_REASONS:
            self._dropped.labels(reason)
        self.queue = LogQueue(settings.blrp_max_queue_size, settings.blrp_max_export_batch_size, self._dropped)
        self._log = ThrottledLog(log, LOG_INTERVAL)
        self._head: tuple[int, bytes] | None = None
        self._scope = field(1, field(1, SCOPE.encode()) + field(2, VERSION.encode()))

    def _resource_and_scope(self) -> bytes:
        pid = os.getpid()
        if self._head is None or self._head[0] != pid:
            resource = field(1, key_values(resource_attributes(self.settings), 1))
            self._head = (pid, resource + b"\x12")  # then the ScopeLogs length and the scope
        return self._head[1]

    def encode(self, batch: list[tuple[int, bytes]]) -> bytes:
        """A serialized ``ExportLogsServiceRequest`` holding ``batch``."""
        head = self._resource_and_scope()
        records = b"".join(field(2, encode_record(t, line)) for t, line in batch)
        scope_logs = self._scope + records
        resource_logs = head + varint(len(scope_logs)) + scope_logs
        return field(1, resource_logs)

    def export(self, stop: threading.Event | None = None) -> None:
        """Send every queued line, a batch per request; after a failure the rest waits for the next
        round (or, at shutdown, is dropped and counted)."""
        queue = self.queue
        while True:
            batch = queue.take(queue.batch_size)
            if not batch:
                return
            result = self.client.export(self.encode(batch), stop)
            if result.ok:
                self._exported.labels().inc(len(batch))
                continue
            reason = result.reason or "other"
            self._failures.labels(reason).inc()
            self._dropped.labels("export_failed").inc(len(batch))
            detail = f": {result.detail}" if result.detail else ""
            self._log.warning(
                f"export:{reason}",
                f"logging: exporting {len(batch)} log records failed ({reason}{detail}); "
                "the app goes on, these records are lost",
            )
            if stop is not None and stop.is_set():
                rest = len(queue)
                queue.clear()
                if rest:
                    self._dropped.labels("shutdown").inc(rest)
            return


class OtlpLogsComponent(Component):
    """Taps the line writer and runs this worker's log export thread (started once per serving
    process: lifespan startup or first request); at lifespan shutdown the queue is exported and
    stdout takes every later line."""

    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        check_protocol(settings, "logs")
        self.exporter = OtlpLogs(settings, runtime.registry)
        self.thread = ExportThread("opskit-otlp-logs", settings.blrp_schedule_delay_ms / 1000, self.exporter.export)
        self.exporter.queue.wake = self.thread.wake
        WRITER.tap = self.exporter.queue.put
        WRITER.stdout = settings.log_stdout
        atexit.register(self._stop)

    def process_started(self) -> None:
        self.thread.start()

    def _stop(self) -> None:
        self.thread.stop()
        if WRITER.tap == self.exporter.queue.put:
            WRITER.tap = None
            WRITER.stdout = True

    async def shutdown(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._stop)


def create_component(runtime: Runtime) -> OtlpLogsComponent | None:
    """The OTLP log exporter of this worker, when ``OTEL_LOGS_EXPORTER=otlp`` (and logging is on)."""
    settings = runtime.settings
    if not (settings.logging_enabled and settings.logs_exporter == "otlp"):
        return None
    return OtlpLogsComponent(runtime)
