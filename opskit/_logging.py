"""structlog JSON logging for the app, its libraries, uvicorn and gunicorn: one object per line.

Both structlog loggers and the stdlib ``logging`` bridge go through one chain of processors and
one writer, so every line carries the same keys: ``timestamp`` (ISO-8601 UTC), ``level``,
``logger``, ``event``, ``service``, ``request_id`` and, while an OpenTelemetry span is current,
``trace_id`` and ``span_id``. orjson escapes newlines and quotes, so no value can split a line.
"""

from __future__ import annotations

import atexit
import io
import logging
import os
import sys
import threading
import time
from asyncio import _get_running_loop
from collections.abc import Callable, Iterable, MutableMapping
from typing import IO, Any

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from .context import _request_id
from .settings import Settings, load_settings

__all__ = ["configure_logging", "get_logger"]

REDACTED = "[REDACTED]"
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_LEVELS["critical"] = logging.CRITICAL
# Loggers whose own handlers would print a second, non-JSON copy of each line.
_FRAMEWORK_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


def _as_line(line: bytes | str) -> bytes:
    if isinstance(line, str):
        line = line.encode("utf-8", "replace")
    return line + b"\n"


class LineWriter:
    """Writes whole lines to one stream under one lock (containers read pipes, lines never tear).

    When the stream is backed by a file descriptor, output is a ``write(2)`` straight to it: half
    the cost of a buffered write followed by a flush. With :attr:`coalesce` on, ordinary lines
    written on a running event loop are gathered and written together once per loop iteration:
    one system call for every line of a busy iteration instead of one per line. Urgent lines
    (warnings, errors, anything from another thread) are written at once, after what is waiting.
    """

    #: Gathered bytes past which the lines are written without waiting for the iteration's end.
    LIMIT = 64 * 1024

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._write: Callable[[bytes], object] = sys.stdout.buffer.write
        self._flush: Callable[[], object] = sys.stdout.buffer.flush
        self._fd: int | None = None
        self.coalesce = False
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._scheduled = False
        self.use(sys.stdout)

    def use(self, stream: IO[bytes] | IO[str]) -> None:
        self.flush()
        target: Any = getattr(stream, "buffer", stream)
        if isinstance(target, io.TextIOBase):
            text: Any = target
            self._write = lambda line: text.write(line.decode("utf-8", "replace"))
        else:
            self._write = target.write
        self._flush = target.flush
        try:
            target.flush()  # what was written through the stream so far goes first
            self._fd = target.fileno() if isinstance(target, (io.BufferedWriter, io.FileIO)) else None
        except (OSError, ValueError):  # io.UnsupportedOperation is both
            self._fd = None

    def msg(self, line: bytes | str) -> None:
        self.raw(_as_line(line))

    def urgent(self, line: bytes | str) -> None:
        """Write ``line`` now, after any lines still gathered."""
        with self._lock:
            self._emit(_as_line(line))

    def raw(self, data: bytes) -> None:
        """Write ``data``, which already ends with a newline: gathered for this loop iteration or now."""
        with self._lock:
            loop = _get_running_loop() if self.coalesce and self._fd is not None else None
            if loop is None:
                self._emit(data)
                return
            self._pending.append(data)
            self._pending_bytes += len(data)
            if self._pending_bytes > self.LIMIT:
                self._emit(b"")
            elif not self._scheduled:
                try:
                    loop.call_soon(self.flush)
                    self._scheduled = True
                except RuntimeError:  # a closing loop runs no more callbacks
                    self._emit(b"")

    def flush(self) -> None:
        """Write every gathered line now."""
        with self._lock:
            self._scheduled = False
            if self._pending:
                self._emit(b"")

    def _emit(self, data: bytes) -> None:
        # Called with the lock held: whatever is gathered goes first, so lines keep their order.
        if self._pending:
            self._pending.append(data)
            data = b"".join(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
        if not data:
            return
        fd = self._fd
        if fd is not None:
            try:
                while data:
                    data = data[os.write(fd, data) :]
                return
            except BlockingIOError:  # a non-blocking stdout: let the buffered stream retry
                pass
        self._write(data)
        self._flush()

    def _after_fork(self) -> None:
        # What waits is the parent's to write; the child's loop never saw the parent's callback.
        self._lock = threading.Lock()
        self._pending.clear()
        self._pending_bytes = 0
        self._scheduled = False

    log = debug = info = msg
    warn = warning = err = error = critical = exception = fatal = urgent


class NamedLogger:
    """What structlog wraps: a name (for the ``logger`` key) in front of the shared writer.

    structlog calls the method named after the line's level: warnings and worse are urgent.
    """

    __slots__ = ("msg", "name", "urgent")

    def __init__(self, name: str | None) -> None:
        self.name = name
        self.msg = _WRITER.msg
        self.urgent = _WRITER.urgent

    def __getattr__(self, method: str) -> Callable[[bytes | str], None]:
        return self.urgent if method in _URGENT else self.msg


_URGENT = frozenset({"warn", "warning", "err", "error", "critical", "exception", "fatal"})


_WRITER = LineWriter()
os.register_at_fork(after_in_child=_WRITER._after_fork)
atexit.register(_WRITER.flush)
_NAMED: dict[str | None, NamedLogger] = {}


def _logger_factory(*args: Any) -> NamedLogger:
    name = args[0] if args and isinstance(args[0], str) else None
    logger = _NAMED.get(name)
    if logger is None:
        logger = _NAMED[name] = NamedLogger(name)
    return logger


def _add_logger_name(logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
    logger_name = getattr(logger, "name", None)
    if logger_name:
        event_dict.setdefault("logger", logger_name)
    return event_dict


# One list object shared by every cached structlog logger, so reconfiguring updates them all.
_PROCESSORS: list[Processor] = []


_HEAD = ("timestamp", "level", "logger", "event")


def _dumps(obj: Any, **_: Any) -> bytes:
    # The keys people scan for come first; orjson keeps insertion order.
    line = {key: obj.pop(key) for key in _HEAD if key in obj}
    line.update(obj)
    return orjson.dumps(line, default=repr, option=orjson.OPT_NON_STR_KEYS)


def _dumps_str(obj: Any, **_: Any) -> str:
    return _dumps(obj).decode()


class RequestContext:
    """Add ``request_id`` and, with tracing on, ``trace_id``/``span_id`` of the current span."""

    def __init__(self, with_trace: bool) -> None:
        self._span_context: Any = None
        if with_trace:
            from opentelemetry import trace

            self._get_current_span = trace.get_current_span
            self._span_context = True

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
        rid = _request_id.get()
        if rid is not None:
            event_dict.setdefault("request_id", rid)
        if self._span_context is not None:
            ctx = self._get_current_span().get_span_context()
            if ctx.is_valid:
                event_dict.setdefault("trace_id", format(ctx.trace_id, "032x"))
                event_dict.setdefault("span_id", format(ctx.span_id, "016x"))
        return event_dict


class Redactor:
    """Replace the values of sensitive keys (case-insensitive, nested dicts too) by ``[REDACTED]``."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = frozenset(k.lower() for k in keys)
        self._seen: dict[str, bool] = {}
        # Keys already known to be harmless: a set difference (C speed) skips them.
        self._safe: set[str] = set()

    def _sensitive(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        hit = self._seen.get(key)
        if hit is None:
            hit = key.lower() in self._keys
            if len(self._seen) < 10_000:
                self._seen[key] = hit
        return hit

    def _scrub(self, mapping: MutableMapping[Any, Any], depth: int) -> None:
        for key in mapping.keys() - self._safe:
            if self._sensitive(key):
                mapping[key] = REDACTED
            elif isinstance(key, str) and len(self._safe) < 10_000:
                self._safe.add(key)
        if depth < 4 and dict in map(type, mapping.values()):
            for value in mapping.values():
                if type(value) is dict:
                    self._scrub(value, depth + 1)

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
        if self._keys:
            self._scrub(event_dict, 0)
        return event_dict


def _add_static(fields: dict[str, str]) -> Processor:
    def add_static(logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
        for key, value in fields.items():
            event_dict.setdefault(key, value)
        return event_dict

    return add_static


class _DropDuplicateServerErrors(logging.Filter):
    """uvicorn logs unhandled exceptions again without the request context; opskit already did."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (exc is not None and getattr(exc, "__opskit_logged__", False))


class _Handler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            (_WRITER.urgent if record.levelno >= logging.WARNING else _WRITER.msg)(self.format(record))
        except Exception:
            self.handleError(record)


_last_second = -1
_last_prefix = ""


def timestamp() -> str:
    """Now as ISO-8601 UTC with microseconds (``2026-01-31T12:00:00.123456Z``), cheaply."""
    global _last_second, _last_prefix
    now = time.time()
    second = int(now)
    if second != _last_second:
        _last_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _last_second = second
    return "%s.%06dZ" % (_last_prefix, (now - second) * 1_000_000)  # noqa: UP031 (faster than an f-string here)


def _add_timestamp(logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
    event_dict["timestamp"] = timestamp()
    return event_dict


_LINE_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE


def write_json(line: dict[str, Any]) -> None:
    """Write one prepared JSON line (the access log's fast path: no processor chain)."""
    _WRITER.raw(orjson.dumps(line, default=repr, option=_LINE_OPTIONS))


def static_fields(settings: Settings) -> dict[str, str]:
    """The fields every line carries: service, and environment and version when set."""
    static = {"service": settings.service_name}
    if settings.environment:
        static["environment"] = settings.environment
    if settings.service_version:
        static["version"] = settings.service_version
    return static


def _drop_color_message(logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
    event_dict.pop("color_message", None)  # uvicorn's ANSI-coloured copy of the message
    return event_dict


def _shared_processors(settings: Settings) -> list[Processor]:
    static = static_fields(settings)
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        RequestContext(with_trace=settings.tracing_enabled),
        _add_timestamp,
        _add_static(static),
        Redactor(settings.log_redact_keys),
    ]


def configure_logging(settings: Settings | None = None, *, stream: IO[bytes] | IO[str] | None = None) -> None:
    """Configure structlog and the stdlib ``logging`` bridge for JSON (or console) lines on stdout.

    Safe to call more than once (a gunicorn config may call it early, :func:`opskit.instrument`
    calls it again); the last call wins. ``stream`` replaces stdout, for tests.
    """
    settings = settings or load_settings()
    _WRITER.use(stream if stream is not None else sys.stdout)
    _WRITER.coalesce = settings.log_coalesce
    level = _LEVELS[settings.log_level]
    shared = _shared_processors(settings)
    if settings.log_format == "console":
        renderer: Processor = structlog.dev.ConsoleRenderer()
        final: list[Processor] = [renderer]
        stdlib_final: list[Processor] = [renderer]
    else:
        tracebacks = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )
        final = [tracebacks, structlog.processors.JSONRenderer(serializer=_dumps)]
        stdlib_final = [tracebacks, structlog.processors.JSONRenderer(serializer=_dumps_str)]

    _PROCESSORS[:] = [_add_logger_name, *shared, structlog.processors.StackInfoRenderer(), *final]
    structlog.configure(
        processors=_PROCESSORS,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_logger_factory,
        cache_logger_on_first_use=True,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            _drop_color_message,
            *shared,
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *stdlib_final],
    )
    handler = _Handler()
    handler.setFormatter(formatter)
    handler.addFilter(_DropDuplicateServerErrors())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    for name in _FRAMEWORK_LOGGERS:
        framework = logging.getLogger(name)
        framework.handlers.clear()
        framework.propagate = True
        framework.setLevel(logging.NOTSET)
    # opskit writes the access log itself; uvicorn's would be a second, poorer copy.
    logging.getLogger("uvicorn.access").disabled = settings.access_log_enabled
    logging.captureWarnings(True)


def get_logger(name: str | None = None, **initial: Any) -> Any:
    """A structlog logger whose lines carry ``logger=name`` and the request context."""
    if name is None:
        return structlog.get_logger(**initial)
    return structlog.get_logger(name, **initial)
