"""The access log: one JSON line per finished request, written when its body is complete."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..component import Component
from ..context import _request_id
from ..exchange import Exchange
from ..paths import PathPatterns
from .config import get_logger
from .processors import RequestContext, timestamp
from .writer import write_json

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = ["AccessLog", "create_component"]

_MAX_FIELD = 1024  # a hostile User-Agent or path must not make a line unbounded


def _milliseconds(seconds: float) -> float:
    """``seconds`` in milliseconds to the microsecond: ``round(ms, 3)`` at a third of its cost."""
    return int(seconds * 1_000_000 + 0.5) / 1000


class AccessLog(Component):
    """Writes the access-log line; replaces uvicorn's and gunicorn's own access logs.

    In JSON format the line is built directly, in the same shape as every other line, instead
    of through the processor chain: its keys are fixed and never sensitive, it is written once per
    request, and its context fields come from the same :class:`RequestContext` the chain uses.
    Fields features add to the request (``ex.annotations``) follow the fixed ones.
    """

    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        self._log = get_logger("opskit.access")
        self._excluded = PathPatterns(settings.access_log_exclude_paths)
        self._fast = settings.log_format == "json"
        self._context = RequestContext(settings)
        self._info = logging.getLevelName(settings.log_level.upper()) <= logging.INFO
        self._error = logging.getLevelName(settings.log_level.upper()) <= logging.ERROR

    def request_finished(self, ex: Exchange) -> None:
        status = ex.status
        failed = status >= 500 or status == 0
        if not (self._error if failed else self._info) or ex.path in self._excluded:
            return
        ua = ex.header(b"user-agent")
        fields: dict[str, Any] = {
            "method": ex.method,
            "route": ex.route,
            "path": ex.path[:_MAX_FIELD],
            "status": status,
            "duration_ms": _milliseconds(ex.end - ex.start),
            "response_bytes": ex.response_bytes,
            "client": ex.client,
            "user_agent": ua[:_MAX_FIELD].decode("latin-1") if ua is not None else None,
        }
        if ex.annotations:
            fields.update(ex.annotations)
        if not self._fast:
            (self._log.error if failed else self._log.info)("request", **fields)
            return
        line: dict[str, Any] = {
            "timestamp": timestamp(),
            "level": "error" if failed else "info",
            "logger": "opskit.access",
            "event": "request",
            **fields,
        }
        self._context.fill(line, ex.request_id or _request_id.get(), ex.trace_id, ex.span_id)
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
        )


def create_component(runtime: Runtime) -> AccessLog | None:
    """The access log, when logging and the access log are on."""
    settings = runtime.settings
    return AccessLog(runtime) if settings.logging_enabled and settings.access_log_enabled else None
