"""OTLP logs: every line the process writes leaves as an OTLP log record too, batched off the loop.

``OTEL_LOGS_EXPORTER=otlp`` taps the process's one line writer, which every line passes: the
app's structlog loggers, the stdlib bridge (libraries, uvicorn, gunicorn) and the access log.
The access log's line is encoded as a record where it is written, by the compiled encoder (see
:mod:`.record`), before it is rendered; every other line costs the writing thread a clock read
and a queue append, and the export thread turns it into a record. The queue is bounded
(``OTEL_BLRP_MAX_QUEUE_SIZE``); a line that finds it full is dropped and counted, as are the
records of an export that failed. stdout keeps its lines unless ``OPSKIT_LOG_STDOUT=false``.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..component import Component
from ..otlp import FAILURE_REASONS, ExportThread, OtlpClient, check_protocol, otlp_client, resource_attributes
from ..otlp.wire import field, key_values, varint
from ..throttle import ThrottledLog
from ..version import VERSION
from .record import encode_line, encode_native
from .writer import WRITER

if TYPE_CHECKING:
    from ..metrics.registry import Registry
    from ..runtime import Runtime
    from ..settings import Settings

__all__ = ["DROP_REASONS", "LogQueue", "OtlpLogs", "OtlpLogsComponent", "create_component"]

log = logging.getLogger("opskit.logging")

SCOPE = "opskit.logging"
DROP_REASONS = ("queue_full", "export_failed", "shutdown")
LOG_INTERVAL = 60.0

#: What the queue holds: a line and its clock read, or a record the native encoder already wrote.
Queued = tuple[int, bytes] | bytes


class LogQueue:
    """The bounded queue between the writing threads and the export thread.

    :meth:`put` is the writer's tap: a clock read and a deque append; :meth:`put_record` takes a
    line before it is rendered and queues its finished record. A line that finds the queue full
    is dropped and counted. ``wake`` is called when a full batch is waiting.
    """

    def __init__(self, max_size: int, batch_size: int, dropped: Any, wake: Any = None) -> None:
        self.max_size = max_size
        self.batch_size = batch_size
        self.dropped = dropped  # counter with a `reason` label
        self.wake = wake
        self._items: deque[Queued] = deque()
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

    def put_record(self, line: dict[str, Any]) -> bool:
        """Queue ``line`` as a record the native encoder writes now; ``False`` when it leaves the
        line to the rendered path (see :mod:`.record`), which then goes through :meth:`put`."""
        items = self._items
        size = len(items)
        if size >= self.max_size:
            self.dropped.labels("queue_full").inc()
            return True
        encoded = encode_native(time.time_ns(), line) if encode_native is not None else None
        if encoded is None:
            return False
        items.append(encoded)
        if size + 1 == self.batch_size and self.wake is not None:
            self.wake()
        return True

    def take(self, count: int) -> list[Queued]:
        """Up to ``count`` of the oldest items, removed from the queue."""
        items = self._items
        out: list[Queued] = []
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

    def encode(self, batch: Sequence[Queued]) -> bytes:
        """A serialized ``ExportLogsServiceRequest`` holding ``batch``."""
        head = self._resource_and_scope()
        records = b"".join(item if type(item) is bytes else encode_line(*item) for item in batch)
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
        WRITER.record_tap = self.exporter.queue.put_record if encode_native is not None else None
        WRITER.stdout = settings.log_stdout
        atexit.register(self._stop)

    def process_started(self) -> None:
        self.thread.start()

    def _stop(self) -> None:
        self.thread.stop()
        if WRITER.tap == self.exporter.queue.put:
            WRITER.tap = None
            WRITER.record_tap = None
            WRITER.stdout = True

    async def shutdown(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._stop)


def create_component(runtime: Runtime) -> OtlpLogsComponent | None:
    """The OTLP log exporter of this worker, when ``OTEL_LOGS_EXPORTER=otlp`` (and logging is on)."""
    settings = runtime.settings
    if not (settings.logging_enabled and settings.logs_exporter == "otlp"):
        return None
    return OtlpLogsComponent(runtime)
