"""Logging for the serving processes (gunicorn master and workers): opskit's JSON logging."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from ..logging import configure_logging, get_logger
from ..runtime import current
from ..settings import Settings

__all__ = ["configure_process_logging", "fatal_line", "flush", "log_event"]

_LOGGER = "opskit.serving"


def configure_process_logging(settings: Settings) -> None:
    """Configure JSON logging in this process (the master, or a worker after fork), unless switched off."""
    if settings.logging_enabled:
        configure_logging(settings)


def log_event(level: int, event: str, **fields: Any) -> None:
    """Write one structured line from the serving machinery (a plain stdlib record when opskit logging is off)."""
    if current().settings.logging_enabled:
        get_logger(_LOGGER).log(level, event, **fields)
    else:
        logging.getLogger(_LOGGER).log(level, "%s %s", event, fields)


def flush() -> None:
    """Flush every handler of the root logger and the standard streams."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()


def fatal_line(message: str, logger: str = _LOGGER) -> str:
    """One JSON line for an error that stops the process before logging is configured."""
    return json.dumps({"level": "critical", "logger": logger, "event": message})
