"""Logging for the serving processes (gunicorn master and workers): opskit's JSON logging."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from ..settings import Settings
from .optional import optional_function

_LOGGER = "opskit.serving"


class _JsonFormatter(logging.Formatter):
    """Fallback used only while opskit's logging module is unavailable."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "opskit_fields", {})
        return json.dumps(
            {"level": record.levelname.lower(), "logger": record.name, "event": record.getMessage(), **fields},
            default=str,
        )


def configure_process_logging(settings: Settings) -> None:
    """Configure JSON logging in this process (the master, or a worker after fork)."""
    configure = optional_function("opskit", "configure_logging")
    if configure is not None:
        configure(settings)
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())


def log_event(level: int, event: str, **fields: Any) -> None:
    """Write one structured line from the serving machinery."""
    get_logger = optional_function("opskit", "get_logger")
    if get_logger is not None:
        get_logger(_LOGGER).log(level, event, **fields)
        return
    logging.getLogger(_LOGGER).log(level, event, extra={"opskit_fields": fields})


def flush() -> None:
    """Flush every handler of the root logger and the standard streams."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
