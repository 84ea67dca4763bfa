"""gunicorn server hooks: metrics directory, per-worker state, flushing, aborted workers.

Feature modules are imported inside the hooks, so the master stays light and the worker does the
work after fork (exporter threads, metric files).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from typing import Any

from .logs import configure_process_logging, flush, log_event
from .options import active_settings
from .sizing import worker_count

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_private_dirs: list[str] = []  # made by this master, removed on exit
_metrics_dir: str | None = None  # prepared by on_starting, for child_exit


def _metrics_directory() -> str | None:
    """Prepare (create and wipe) the multiprocess metrics directory; returns its path."""
    global _metrics_dir
    settings = active_settings()
    if not settings.metrics_enabled:
        return None
    # The metrics section owns PROMETHEUS_MULTIPROC_DIR; without it, a private directory.
    path: str | None = getattr(settings, "prometheus_multiproc_dir", None)
    if not path:
        path = tempfile.mkdtemp(prefix="opskit-metrics-")
        _private_dirs.append(path)
    # Workers read the variable (their settings, prometheus_client): set it before they fork.
    os.environ[MULTIPROC_ENV] = path
    _metrics_dir = path
    from opskit.metrics.multiprocess import prepare_directory

    prepare_directory(path)
    return path


def on_starting(server: Any) -> None:
    """Master start: metrics directory, worker-count log line, optional start-up delay."""
    settings = active_settings()
    metrics_dir = _metrics_directory()
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


def when_ready(server: Any) -> None:
    """Master ready: the listeners are open."""
    log_event(logging.INFO, "listening", addresses=[str(listener) for listener in server.LISTENERS])


def post_fork(server: Any, worker: Any) -> None:
    """New worker: stop signals held, logging re-configured for this process, tracing exporters started."""
    hold = getattr(worker, "hold_stop_signals", None)
    if callable(hold):
        hold()
    configure_process_logging(active_settings())
    from opskit.tracing import init_worker

    init_worker()


def child_exit(server: Any, worker: Any) -> None:
    """Master, after a worker died: fold its counts into the archive, drop its live gauges."""
    if _metrics_dir is None:
        return
    from prometheus_client.multiprocess import mark_process_dead

    from opskit.metrics.multiprocess import worker_exited

    worker_exited(worker.pid, _metrics_dir)
    # Live gauges of metrics an app defines with prometheus_client itself.
    mark_process_dead(worker.pid, _metrics_dir)  # type: ignore[no-untyped-call]


def worker_exit(server: Any, worker: Any) -> None:
    """Worker about to exit: spans and logs flushed."""
    if worker.pid != os.getpid():
        return  # gunicorn also calls this in the master for a worker that vanished
    from opskit.tracing import shutdown

    shutdown()
    flush()


def worker_abort(worker: Any) -> None:
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


def on_exit(server: Any) -> None:
    """Master exit: the private metrics directory is removed."""
    global _metrics_dir
    if _metrics_dir in _private_dirs:
        _metrics_dir = None
    while _private_dirs:
        shutil.rmtree(_private_dirs.pop(), ignore_errors=True)
    flush()
