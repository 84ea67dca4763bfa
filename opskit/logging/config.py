"""Configuration of structlog and the stdlib ``logging`` bridge over one chain and one writer."""

from __future__ import annotations

import logging
import sys
from typing import IO, Any

import structlog
from structlog.typing import Processor

from ..settings import Settings
from .processors import add_logger_name, drop_color_message, dumps, dumps_str, shared_processors
from .writer import WRITER, logger_factory

__all__ = ["FRAMEWORK_LOGGERS", "configure_logging", "get_logger", "hand_framework_loggers_to_root"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_LEVELS["critical"] = logging.CRITICAL
# Loggers whose own handlers would print a second, non-JSON copy of each line.
FRAMEWORK_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")

# One list object shared by every cached structlog logger, so reconfiguring updates them all.
_PROCESSORS: list[Processor] = []


class _DropDuplicateServerErrors(logging.Filter):
    """uvicorn logs unhandled exceptions again without the request context; opskit already did."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (exc is not None and getattr(exc, "__opskit_logged__", False))


class _Handler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            (WRITER.urgent if record.levelno >= logging.WARNING else WRITER.msg)(self.format(record))
        except Exception:
            self.handleError(record)


def hand_framework_loggers_to_root() -> None:
    """Let uvicorn's loggers propagate to the root handler instead of printing with their own."""
    for name in FRAMEWORK_LOGGERS:
        framework = logging.getLogger(name)
        framework.handlers.clear()
        framework.propagate = True
        framework.setLevel(logging.NOTSET)


def configure_logging(settings: Settings | None = None, *, stream: IO[bytes] | IO[str] | None = None) -> None:
    """Configure structlog and the stdlib ``logging`` bridge for JSON (or console) lines on stdout.

    Both structlog loggers and stdlib records go through one chain of processors and one writer,
    so every line carries the same keys: ``timestamp`` (ISO-8601 UTC), ``level``, ``logger``,
    ``event``, ``service``, ``request_id`` and, while an OpenTelemetry span is current,
    ``trace_id`` and ``span_id``. orjson escapes newlines and quotes, so no value can split a line.

    ``settings`` defaults to the process's runtime (:func:`opskit.runtime.current`). Safe to call
    more than once; the last call wins. ``stream`` replaces stdout, for tests.
    """
    if settings is None:
        from ..runtime import current

        settings = current().settings
    WRITER.use(stream if stream is not None else sys.stdout)
    WRITER.coalesce = settings.log_coalesce
    level = _LEVELS[settings.log_level]
    shared = shared_processors(settings)
    if settings.log_format == "console":
        renderer: Processor = structlog.dev.ConsoleRenderer()
        final: list[Processor] = [renderer]
        stdlib_final: list[Processor] = [renderer]
    else:
        tracebacks = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )
        final = [tracebacks, structlog.processors.JSONRenderer(serializer=dumps)]
        stdlib_final = [tracebacks, structlog.processors.JSONRenderer(serializer=dumps_str)]

    _PROCESSORS[:] = [add_logger_name, *shared, structlog.processors.StackInfoRenderer(), *final]
    structlog.configure(
        processors=_PROCESSORS,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=logger_factory,
        cache_logger_on_first_use=True,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            drop_color_message,
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
    hand_framework_loggers_to_root()
    # opskit writes the access log itself; uvicorn's would be a second, poorer copy.
    logging.getLogger("uvicorn.access").disabled = settings.access_log_enabled
    logging.captureWarnings(True)


def get_logger(name: str | None = None, **initial: Any) -> Any:
    """A structlog logger whose lines carry ``logger=name`` and the request context."""
    if name is None:
        return structlog.get_logger(**initial)
    return structlog.get_logger(name, **initial)
