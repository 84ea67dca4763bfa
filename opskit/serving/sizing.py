"""The number of gunicorn workers: ``WEB_CONCURRENCY``, or sized from CPUs and memory."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..settings import Settings
from . import cgroup
from .cpu import usable_cpus

__all__ = ["WorkerCount", "compute_workers", "worker_count"]


_MIB = 1024 * 1024


@dataclass(frozen=True)
class WorkerCount:
    """How many workers to run, and why (for the start-up log line and ``opskit config``)."""

    workers: int
    reason: str


def compute_workers(
    *,
    cpus: float,
    workers_per_core: float,
    min_workers: int,
    max_workers: int | None,
    memory_bytes: int | None,
    worker_memory_mb: int,
) -> int:
    """``ceil(cpus * workers_per_core)`` within ``[min_workers, max_workers]``, capped by memory.

    The memory cap (``memory_bytes // worker budget``, at least 1) wins over ``min_workers``:
    a pod that gets OOM-killed serves nobody.
    """
    workers = max(min_workers, math.ceil(cpus * workers_per_core - 1e-9))
    if max_workers is not None:
        workers = min(workers, max_workers)
    if memory_bytes is not None and worker_memory_mb > 0:
        workers = min(workers, max(1, memory_bytes // (worker_memory_mb * _MIB)))
    return max(1, workers)


def worker_count(settings: Settings, proc_cgroup: Path = cgroup.PROC_SELF_CGROUP) -> WorkerCount:
    """The worker count for ``settings``: ``WEB_CONCURRENCY`` when set, else computed."""
    if settings.web_concurrency is not None:
        return WorkerCount(settings.web_concurrency, "WEB_CONCURRENCY")
    root = Path(settings.cgroup_root)
    cpu = usable_cpus(root, proc_cgroup)
    memory = cgroup.memory_limit(root, proc_cgroup) if settings.worker_memory_mb else None
    workers = compute_workers(
        cpus=cpu.cpus,
        workers_per_core=settings.workers_per_core,
        min_workers=settings.min_workers,
        max_workers=settings.max_workers,
        memory_bytes=memory,
        worker_memory_mb=settings.worker_memory_mb,
    )
    reason = f"{cpu.cpus:g} CPUs ({cpu.source}) x {settings.workers_per_core:g}"
    if memory is not None:
        reason += f", memory limit {memory // _MIB} MiB / {settings.worker_memory_mb} MiB per worker"
    return WorkerCount(workers, reason)
