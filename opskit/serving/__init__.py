"""Serving: `opskit serve`, the gunicorn configuration, container-aware sizing, graceful shutdown."""

from __future__ import annotations

from .hooks import ServerHooks
from .options import gunicorn_options
from .sizing import WorkerCount, worker_count

__all__ = ["ServerHooks", "WorkerCount", "gunicorn_options", "worker_count"]
