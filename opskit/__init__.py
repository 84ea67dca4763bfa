"""opskit: the production kit for FastAPI and other ASGI services.

``opskit.instrument(app)`` installs request IDs, JSON logging, metrics, tracing, rate limiting
and health endpoints as one pure ASGI middleware.
"""

from __future__ import annotations

from .annotations import annotate
from .component import Component
from .context import request_id
from .exchange import Exchange
from .health import add_readiness_check, begin_shutdown, is_shutting_down
from .instrument import instrument, wrap
from .logging import configure_logging, get_logger
from .middleware import OpskitMiddleware
from .runtime import Runtime
from .settings import ConfigError, Settings, load_settings
from .version import VERSION as __version__

__all__ = [
    "Component",
    "ConfigError",
    "Exchange",
    "OpskitMiddleware",
    "Runtime",
    "Settings",
    "__version__",
    "add_readiness_check",
    "annotate",
    "begin_shutdown",
    "configure_logging",
    "get_logger",
    "instrument",
    "is_shutting_down",
    "load_settings",
    "request_id",
    "wrap",
]
