"""gunicorn run in-process by `opskit serve`, with opskit's options instead of a config file."""

from __future__ import annotations

import logging
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.errors import AppImportError
from gunicorn.util import import_app

from .logs import flush, log_event

__all__ = ["GunicornApplication"]


class GunicornApplication(BaseApplication):  # type: ignore[misc]
    """gunicorn's arbiter serving ``app_uri`` (``module:attribute``) with the given options."""

    def __init__(self, app_uri: str, options: dict[str, Any]) -> None:
        self.app_uri = app_uri
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        """Import the app in the worker; a failure is one JSON line, then the boot-error exit gunicorn expects."""
        try:
            return import_app(self.app_uri)
        except Exception as exc:
            # gunicorn would also print the bare message to stderr: not a JSON line.
            not_found = isinstance(exc, (ImportError, AppImportError))
            log_event(logging.CRITICAL, "app failed to load", app=self.app_uri, exc_info=exc)
            flush()
            raise SystemExit(Arbiter.APP_LOAD_ERROR if not_found else Arbiter.WORKER_BOOT_ERROR) from None
