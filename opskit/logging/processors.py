"""The processors every line goes through: request context, timestamp, static fields, redaction.

:class:`RequestContext` owns the fields that tie a line to its request and its service; the
access log fills its line with the same object, so both renderings always carry the same keys.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, MutableMapping
from typing import Any

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from ..context import _exchange, _request_id
from ..fields import REDACTED
from ..settings import Settings
from .writer import WRITER, Recorded

__all__ = [
    "REDACTED",
    "Redactor",
    "RequestContext",
    "add_logger_name",
    "drop_color_message",
    "dumps",
    "dumps_str",
    "shared_processors",
    "static_fields",
    "timestamp",
]

_HEAD = ("timestamp", "level", "logger", "event")


def static_fields(settings: Settings) -> dict[str, str]:
    """The fields every line carries: service, and environment and version when set."""
    static = {"service": settings.service_name}
    if settings.environment:
        static["environment"] = settings.environment
    if settings.service_version:
        static["version"] = settings.service_version
    return static


class RequestContext:
    """Add ``request_id``, ``trace_id``/``span_id`` of the current span (with tracing on), the
    fields the request was annotated with (:func:`opskit.annotate`) and the static fields of
    :func:`static_fields`; keys already present are kept."""

    __slots__ = ("_get_current_span", "static")

    def __init__(self, settings: Settings) -> None:
        self.static = static_fields(settings)
        self._get_current_span: Any = None
        if settings.tracing_enabled:
            from opentelemetry import trace

            self._get_current_span = trace.get_current_span

    def fill(
        self, line: MutableMapping[str, Any], request_id: str | None, trace_id: str | None, span_id: str | None
    ) -> None:
        """Add the context fields to ``line`` from values the caller already knows."""
        if request_id is not None:
            line.setdefault("request_id", request_id)
        if trace_id is not None:
            line.setdefault("trace_id", trace_id)
            line.setdefault("span_id", span_id)
        for key, value in self.static.items():
            line.setdefault(key, value)

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
        trace_id = span_id = None
        if self._get_current_span is not None:
            ctx = self._get_current_span().get_span_context()
            if ctx.is_valid:
                trace_id, span_id = format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
        self.fill(event_dict, _request_id.get(), trace_id, span_id)
        ex = _exchange.get()
        if ex is not None and ex.annotations:
            for key, value in ex.annotations.items():
                event_dict.setdefault(key, value)
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


def add_logger_name(logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
    """``logger``: the name of the :class:`~opskit.logging.writer.NamedLogger` that wrote the line."""
    logger_name = getattr(logger, "name", None)
    if logger_name:
        event_dict.setdefault("logger", logger_name)
    return event_dict


def drop_color_message(logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
    """Drop uvicorn's ANSI-coloured copy of the message."""
    event_dict.pop("color_message", None)
    return event_dict


def shared_processors(settings: Settings) -> list[Processor]:
    """The chain structlog lines and stdlib records share, before rendering."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        RequestContext(settings),
        _add_timestamp,
        Redactor(settings.log_redact_keys),
    ]


def _ordered(obj: Any) -> dict[Any, Any]:
    # The keys people scan for first (orjson keeps insertion order).
    line = {key: obj.pop(key) for key in _HEAD if key in obj}
    line.update(obj)
    return line


def dumps(obj: Any, **_: Any) -> bytes:
    """Render a structlog line. The writer's record tap (OTLP logs) is offered the line first:
    when it takes it, the rendering is marked :class:`~.writer.Recorded` (and is empty with stdout off)."""
    line = _ordered(obj)
    take = WRITER.record_tap
    if take is not None and take(line):
        return Recorded(orjson.dumps(line, default=repr, option=orjson.OPT_NON_STR_KEYS) if WRITER.stdout else b"")
    return orjson.dumps(line, default=repr, option=orjson.OPT_NON_STR_KEYS)


def dumps_str(obj: Any, **_: Any) -> str:
    """A stdlib record's line, as text (the logging module's formatter joins it into a new string,
    so it takes the rendered path: the tap parses it)."""
    return orjson.dumps(_ordered(obj), default=repr, option=orjson.OPT_NON_STR_KEYS).decode()
