"""gunicorn hooks of the multi-worker metrics test: what ``opskit serve`` installs."""

from __future__ import annotations

from typing import Any

from opskit.metrics import prepare_directory, worker_exited
from opskit.settings import load_settings


def on_starting(server: Any) -> None:
    directory = load_settings().prometheus_multiproc_dir
    if directory:
        prepare_directory(directory)


def child_exit(server: Any, worker: Any) -> None:
    worker_exited(worker.pid)
