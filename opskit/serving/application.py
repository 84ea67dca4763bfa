"""gunicorn run in-process by `opskit serve`, with opskit's options instead of a config file."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.util import import_app


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
        return import_app(self.app_uri)
