"""The line writer: every log line of the process, whole, through one lock and one descriptor."""

from __future__ import annotations

import asyncio
import atexit
import io
import os
import sys
import threading
from collections.abc import Callable
from typing import IO, Any

import orjson

__all__ = ["WRITER", "LineWriter", "NamedLogger", "Recorded", "logger_factory", "write_json"]


class Recorded(bytes):
    """A rendered line whose record the record tap already took: written to the stream only
    (empty when stdout is off)."""

    __slots__ = ()


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

    :attr:`tap`, when set, receives every line first (the OTLP log exporter queues it);
    :attr:`record_tap`, when set, is offered a line before it is rendered (see :func:`write_json`);
    :attr:`stdout` off writes nothing to the stream.
    """

    #: Gathered bytes past which the lines are written without waiting for the iteration's end.
    LIMIT = 64 * 1024

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._write: Callable[[bytes], object] = sys.stdout.buffer.write
        self._flush: Callable[[], object] = sys.stdout.buffer.flush
        self._fd: int | None = None
        self.coalesce = False
        self.tap: Callable[[bytes], object] | None = None
        self.record_tap: Callable[[dict[str, Any]], bool] | None = None
        self.stdout = True
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._scheduled = False
        self.use(sys.stdout)

    def use(self, stream: IO[bytes] | IO[str]) -> None:
        """Write to ``stream`` from now on (what is gathered goes to the old one first)."""
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
        """Write an ordinary line (gathered for this loop iteration when coalescing)."""
        if type(line) is Recorded:
            if line:
                self._to_stream(line + b"\n")
            return
        self.raw(_as_line(line))

    def urgent(self, line: bytes | str) -> None:
        """Write ``line`` now, after any lines still gathered."""
        if type(line) is Recorded:
            if line:
                with self._lock:
                    self._emit(line + b"\n")
            return
        data = _as_line(line)
        tap = self.tap
        if tap is not None:
            tap(data)
            if not self.stdout:
                return
        with self._lock:
            self._emit(data)

    def raw(self, data: bytes) -> None:
        """Write ``data``, which already ends with a newline: gathered for this loop iteration or now."""
        tap = self.tap
        if tap is not None:
            tap(data)
            if not self.stdout:
                return
        self._to_stream(data)

    def _to_stream(self, data: bytes) -> None:
        # raw() past the tap: the line's record was taken before it was rendered.
        with self._lock:
            loop = None
            if self.coalesce and self._fd is not None:
                try:  # noqa: SIM105 (contextlib.suppress would cost a context manager per line)
                    loop = asyncio.get_running_loop()
                except RuntimeError:  # another thread, or no loop at all: written now
                    pass
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


WRITER = LineWriter()
"""The process's one writer: structlog loggers, the stdlib bridge and the access log share it."""
os.register_at_fork(after_in_child=WRITER._after_fork)
atexit.register(WRITER.flush)

_URGENT = frozenset({"warn", "warning", "err", "error", "critical", "exception", "fatal"})


class NamedLogger:
    """What structlog wraps: a name (for the ``logger`` key) in front of the shared writer.

    structlog calls the method named after the line's level: warnings and worse are urgent.
    """

    __slots__ = ("msg", "name", "urgent")

    def __init__(self, name: str | None) -> None:
        self.name = name
        self.msg = WRITER.msg
        self.urgent = WRITER.urgent

    def __getattr__(self, method: str) -> Callable[[bytes | str], None]:
        return self.urgent if method in _URGENT else self.msg


_NAMED: dict[str | None, NamedLogger] = {}


def logger_factory(*args: Any) -> NamedLogger:
    """structlog's logger factory: one :class:`NamedLogger` per name."""
    name = args[0] if args and isinstance(args[0], str) else None
    logger = _NAMED.get(name)
    if logger is None:
        logger = _NAMED[name] = NamedLogger(name)
    return logger


_LINE_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE


def write_json(line: dict[str, Any]) -> None:
    """Write one prepared JSON line (the access log's fast path: no processor chain).

    The record tap sees the line first, as a dict: when it takes it, the line is rendered only
    for stdout (and not at all with stdout off).
    """
    writer = WRITER
    take = writer.record_tap
    if take is not None and take(line):
        if writer.stdout:
            writer._to_stream(orjson.dumps(line, default=repr, option=_LINE_OPTIONS))
        return
    writer.raw(orjson.dumps(line, default=repr, option=_LINE_OPTIONS))
