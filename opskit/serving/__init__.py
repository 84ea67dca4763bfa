"""Serving: `opskit serve`, the gunicorn configuration, container-aware sizing, graceful shutdown."""

from __future__ import annotations

from .options import active_settings, gunicorn_options, use_settings
from .sizing import WorkerCount, worker_count

__all__ = ["WorkerCount", "active_settings", "gunicorn_options", "use_settings", "worker_count"]
