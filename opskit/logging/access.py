"""The access log: one JSON line per finished request, written when its body is complete."""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Any

from ..component import Component
from ..context import _request_id
from ..exchange import Exchange
from ..fields import MAX_FIELD
from ..headers import capture, request_headers
from ..paths import PathPatterns
from .config import get_logger
from .processors import RequestContext, timestamp
from .writer import write_json

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = ["AccessLog", "create_component"]

_MAX_FIELD = MAX_FIELD  # a hostile User-Agent or path must not make a line unbounded
_LOW_64 = (1 << 64) - 1
_HEAD = frozenset({"timestamp", "level", "logger", "event"})  # the JSON line's own; not structlog fields


def _milliseconds(seconds: float) -> float:
    """``seconds`` in milliseconds to the microsecond: ``round(ms, 3)`` at a third of its cost."""
    return int(seconds * 1_000_000 + 0.5) / 1000


class AccessLog(Component):
    """Writes the access-log line; replaces uvicorn's and gunicorn's own access logs.

    In JSON format the line is built directly, in the same shape as every other line, instead
    of through the processor chain: its keys are fixed and never sensitive, it is written once per
    request, and its context fields come from the same :class:`RequestContext` the chain uses.
    Fields features and the app add to the request (``ex.annotations``) follow the fixed ones.

    With ``OPSKIT_ACCESS_LOG_SAMPLE`` below 1, an ordinary request is logged when the low 64 bits
    of its trace ID fall below the share of 2**64, the test OpenTelemetry's trace ID ratio sampler
    makes (so at equal rates the logged requests are the traced ones), or by a random draw when it
    has no trace. Errors, slow requests (``OPSKIT_ACCESS_LOG_SLOW_THRESHOLD``, written at
    ``warning``) and, if asked, 4xx responses are always logged.
    """

    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        self._log = get_logger("opskit.access")
        self._excluded = PathPatterns(settings.access_log_exclude_paths)
        self._fast = settings.log_format == "json"
        self._context = RequestContext(settings)
        level = logging.getLevelName(settings.log_level.upper())
        self._info = level <= logging.INFO
        self._warning = level <= logging.WARNING
        self._error = level <= logging.ERROR
        self._slow = settings.access_log_slow_threshold
        self._headers = settings.access_log_captured_headers and bool(settings.capture_headers_server_request)
        responses = settings.access_log_captured_headers and bool(settings.capture_headers_server_response)
        self._response_headers = capture(runtime) if responses else None
        self._sample = settings.access_log_sample
        self._sampling = self._sample < 1.0
        self._bound = round(self._sample * (1 << 64))
        self._keep_below = 400 if settings.access_log_sample_keep_4xx else 500
        self._skipped: Any = None
        self._plain = self._slow is None and not self._sampling
        self._capturing = self._headers or self._response_headers is not None
        self._static = self._context.static
        if self._sampling:
            self._skipped = runtime.registry.counter(
                "opskit_access_log_skipped_total", "Access-log lines left out by OPSKIT_ACCESS_LOG_SAMPLE."
            ).labels()

    def _sampled_out(self, ex: Exchange) -> bool:
        """Whether this ordinary request's line is left out (one decision per request)."""
        number = ex.trace_number
        if number is not None:
            return (number & _LOW_64) >= self._bound
        return random.random() >= self._sample

    def _level(self, ex: Exchange, status: int, failed: bool) -> str | None:
        """The line's level with a slow threshold or sampling set, or ``None`` when it is not written."""
        slow = self._slow is not None and not failed and ex.end - ex.start > self._slow
        if not (self._error if failed else self._warning if slow else self._info) or ex.path in self._excluded:
            return None
        if self._sampling and not failed and not slow and status < self._keep_below and self._sampled_out(ex):
            self._skipped.inc()
            return None
        return "error" if failed else "warning" if slow else "info"

    def _add_headers(self, ex: Exchange, line: dict[str, Any]) -> None:
        if self._headers:
            line["request_headers"] = request_headers(ex)
        if self._response_headers is not None:
            line["response_headers"] = self._response_headers.pick(ex.app_headers, response=True)

    def request_finished(self, ex: Exchange) -> None:
        status = ex.status
        failed = status >= 500 or status == 0
        level: str | None
        if self._plain:  # no slow threshold, no sampling (decided at startup): the level alone decides
            if not (self._error if failed else self._info) or ex.path in self._excluded:
                return
            level = "error" if failed else "info"
        else:
            level = self._level(ex, status, failed)
            if level is None:
                return
        ua = ex.header(b"user-agent")
        # Built in its final order in one go: the head keys, the request's fields, then the context.
        line: dict[str, Any] = {
            "timestamp": timestamp(),
            "level": level,
            "logger": "opskit.access",
            "event": "request",
            "method": ex.method,
            "route": ex.route,
            "path": ex.path[:_MAX_FIELD],
            "status": status,
            "duration_ms": _milliseconds(ex.end - ex.start),
            "response_bytes": ex.response_bytes,
            "client": ex.client,
            "user_agent": ua[:_MAX_FIELD].decode("latin-1") if ua is not None else None,
        }
        if self._capturing:
            self._add_headers(ex, line)
        annotations = ex.annotations
        if annotations:
            line.update(annotations)
        if not self._fast:
            fields = {key: value for key, value in line.items() if key not in _HEAD}
            getattr(self._log, level)("request", **fields)
            return
        request_id = ex.request_id or _request_id.get()
        if annotations:
            self._context.fill(line, request_id, ex.trace_id, ex.span_id)
        else:
            # What fill() adds, in its order; the line has none of these keys yet, so no setdefault.
            if request_id is not None:
                line["request_id"] = request_id
            trace_id = ex.trace_id
            if trace_id is not None:
                line["trace_id"] = trace_id
                line["span_id"] = ex.span_id
            line.update(self._static)
        write_json(line)

    def websocket_closed(self, ex: Exchange) -> None:
        if ex.path in self._excluded:
            return
        self._log.info(
            "websocket",
            route=ex.route,
            path=ex.path[:_MAX_FIELD],
            status=ex.status,
            duration_ms=_milliseconds(ex.duration),
            client=ex.client,
            **(ex.annotations or {}),
        )


def create_component(runtime: Runtime) -> AccessLog | None:
    """The access log, when logging and the access log are on."""
    settings = runtime.settings
    return AccessLog(runtime) if settings.logging_enabled and settings.access_log_enabled else None
