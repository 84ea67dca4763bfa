"""gunicorn server hooks: metrics directory, per-worker state, flushing, aborted workers.

The hooks are methods of :class:`ServerHooks`, bound to the runtime `opskit serve` (or the
shipped gunicorn config) resolved once in the master; forked workers inherit it. Feature modules
are imported inside the hooks, so the master stays light and the worker does the work after fork.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from typing import Any

from ..runtime import Runtime
from .logs import configure_process_logging, flush, log_event
from .sizing import worker_count

__all__ = ["MULTIPROC_ENV", "ServerHooks"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class ServerHooks:
    """gunicorn's server hooks for one runtime (``on_starting``, ``post_fork``, ``child_exit``...)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.metrics_dir: str | None = None  # prepared by on_starting, for child_exit
        self._private_dir: str | None = None  # made by this master, removed on exit

    def _prepare_metrics_directory(self) -> str | None:
        """Prepare (create and wipe) the multiprocess metrics directory; returns its path."""
        settings = self.runtime.settings
        if not settings.metrics_enabled:
            return None
        path = settings.prometheus_multiproc_dir
        if not path:
            path = self._private_dir = tempfile.mkdtemp(prefix="opskit-metrics-")
        # Workers read the variable (prometheus_client, an app's own settings): set it before they fork.
        os.environ[MULTIPROC_ENV] = path
        self.metrics_dir = path
        from ..metrics.multiprocess import prepare_directory

        prepare_directory(path)
        return path

    def _prepare_rate_limit_table(self, workers: int) -> None:
        """Without Redis, the table in which the workers share their rate-limit buckets."""
        from ..ratelimit import SHARED_FILE_ENV, prepare_workers

        settings = self.runtime.settings
        path = prepare_workers(settings, workers)
        if path is None or path == settings.rate_limit_shared_file:
            return
        os.environ[SHARED_FILE_ENV] = path  # the app's own instrument() reads the environment
        self.runtime.settings = settings.model_copy(update={"rate_limit_shared_file": path})

    def on_starting(self, server: Any) -> None:
        """Master start: metrics directory, worker-count log line, optional start-up delay."""
        settings = self.runtime.settings
        metrics_dir = self._prepare_metrics_directory()
        if metrics_dir != settings.prometheus_multiproc_dir:
            # The workers' runtime: what the master resolved, with the directory it made.
            self.runtime.settings = settings.model_copy(update={"prometheus_multiproc_dir": metrics_dir})
        self._prepare_rate_limit_table(server.num_workers)
        sizing = worker_count(settings)
        log_event(
            logging.INFO,
            "starting",
            workers=server.num_workers,
            sizing=sizing.reason if sizing.workers == server.num_workers else "gunicorn option",
            metrics_dir=metrics_dir,
        )
        if settings.startup_delay:
            log_event(logging.INFO, "start-up delay", seconds=settings.startup_delay)
            time.sleep(settings.startup_delay)

    def when_ready(self, server: Any) -> None:
        """Master ready: the listeners are open."""
        log_event(logging.INFO, "listening", addresses=[str(listener) for listener in server.LISTENERS])

    def post_fork(self, server: Any, worker: Any) -> None:
        """New worker: stop signals held, logging re-configured for this process.

        The tracing pipeline is left to the app's lifespan startup: it is built from the settings
        the app gives ``instrument()``, which may differ from the environment's.
        """
        hold = getattr(worker, "hold_stop_signals", None)
        if callable(hold):
            hold()
        configure_process_logging(self.runtime.settings)

    def child_exit(self, server: Any, worker: Any) -> None:
        """Master, after a worker died: fold its counts into the archive, drop its live gauges."""
        if self.metrics_dir is None:
            return
        from ..metrics.multiprocess import worker_exited

        worker_exited(worker.pid, self.metrics_dir)

    def worker_exit(self, server: Any, worker: Any) -> None:
        """Worker about to exit: spans and logs flushed."""
        if worker.pid != os.getpid():
            return  # gunicorn also calls this in the master for a worker that vanished
        from ..tracing import shutdown

        shutdown()
        flush()

    def worker_abort(self, worker: Any) -> None:
        """Worker killed for a timeout (SIGABRT): one error line naming the requests in flight."""
        in_flight = getattr(worker, "in_flight", None)
        requests = in_flight() if callable(in_flight) else []
        log_event(
            logging.ERROR,
            "worker aborted",
            pid=os.getpid(),
            timeout=getattr(worker.cfg, "timeout", None),
            requests_in_flight=requests,
        )
        flush()

    def on_exit(self, server: Any) -> None:
        """Master exit: the private metrics directory is removed."""
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
            if self.metrics_dir == self._private_dir:
                self.metrics_dir = None
            self._private_dir = None
        flush()

    def as_options(self) -> dict[str, Any]:
        """The hooks keyed by gunicorn's setting names."""
        return {
            "on_starting": self.on_starting,
            "when_ready": self.when_ready,
            "post_fork": self.post_fork,
            "child_exit": self.child_exit,
            "worker_exit": self.worker_exit,
            "worker_abort": self.worker_abort,
            "on_exit": self.on_exit,
        }
