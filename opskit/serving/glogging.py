"""gunicorn's logger, routed through opskit's JSON logging.

gunicorn normally writes its own plain-text lines to stderr. This logger class keeps gunicorn's
interface but sends ``gunicorn.error`` records to the standard ``logging`` tree that opskit
configures, so the master's and workers' lines are JSON like every other. gunicorn's access log
stays off: opskit writes one access line per request itself.
"""

from __future__ import annotations

import logging
from typing import Any

from gunicorn import glogging

from ..runtime import current
from .logs import configure_process_logging

__all__ = ["GunicornLogger"]


class GunicornLogger(glogging.Logger):  # type: ignore[misc]
    """``logger_class`` for gunicorn: JSON lines through opskit, no access log of its own."""

    def setup(self, cfg: Any) -> None:
        settings = current().settings
        if not settings.logging_enabled:
            super().setup(cfg)  # OPSKIT_LOGGING_ENABLED=false: gunicorn's own logging, untouched
            return
        self.cfg = cfg
        self._access_log_enabled = False
        self.loglevel = self.LOG_LEVELS.get(cfg.loglevel.lower(), logging.INFO)
        configure_process_logging(settings)
        for log in (self.error_log, self.access_log):
            for handler in list(log.handlers):
                log.removeHandler(handler)
        self.error_log.propagate = True
        self.error_log.setLevel(self.loglevel)
        self.access_log.propagate = False
        self.access_log.addHandler(logging.NullHandler())

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        """gunicorn's access log is off: opskit's middleware writes it."""
