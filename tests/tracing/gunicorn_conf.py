"""gunicorn hooks of the tracing tests: the pipeline is built in each worker and flushed on its exit; the
metrics directory is prepared as ``opskit serve`` does."""

from __future__ import annotations

import os
import threading
from typing import Any

import opskit.tracing
from tests.metrics.gunicorn_conf import child_exit, on_starting

__all__ = ["child_exit", "on_starting", "post_fork", "pre_fork", "worker_exit"]


def pre_fork(server: Any, worker: Any) -> None:
    # In the master, app already imported (--preload): record its threads for the test to check.
    with open(os.environ["TEST_MASTER_THREADS"], "a") as f:
        f.write(",".join(t.name for t in threading.enumerate()) + "\n")


def post_fork(server: Any, worker: Any) -> None:
    opskit.tracing.init_worker()


def worker_exit(server: Any, worker: Any) -> None:
    opskit.tracing.shutdown()
