"""How many CPUs this process may really use: cgroup quota, CPU affinity, then the host.

``os.cpu_count()`` reports the host's CPUs; a pod limited to one CPU on a 64-core node would
start 64 workers. The quota and the affinity mask each cap what the process gets; the host count
is used only when neither limits it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import cgroup

__all__ = ["CpuCount", "affinity_count", "usable_cpus"]


def affinity_count() -> int | None:
    """CPUs in this process's affinity mask (``taskset``, cpusets), or None where unsupported."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is None:
        return None
    try:
        return len(getaffinity(0)) or None
    except OSError:
        return None


@dataclass(frozen=True)
class CpuCount:
    """The usable CPUs and what limited them."""

    cpus: float
    source: str  # "cgroup", "affinity" or "host"


def usable_cpus(root: Path = cgroup.DEFAULT_ROOT, proc_cgroup: Path = cgroup.PROC_SELF_CGROUP) -> CpuCount:
    """The tightest of the cgroup CPU quota and the affinity mask; the host count otherwise."""
    host = os.cpu_count() or 1
    quota = cgroup.cpu_limit(root, proc_cgroup)
    affinity = affinity_count()
    candidates: list[tuple[float, str]] = []
    if quota is not None:
        candidates.append((quota, "cgroup"))
    if affinity is not None and affinity < host:
        candidates.append((float(affinity), "affinity"))
    if not candidates:
        return CpuCount(float(affinity or host), "host")
    cpus, source = min(candidates)
    return CpuCount(cpus, source)
