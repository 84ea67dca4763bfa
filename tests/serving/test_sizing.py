"""The worker count: WEB_CONCURRENCY, or computed from CPUs, bounds and memory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from opskit.serving import cpu
from opskit.serving.sizing import compute_workers, worker_count
from opskit.settings import load_settings
from tests.serving.test_cgroup import v2_tree, write

MIB = 2**20


def compute(cpus: float, **kwargs: int | float | None) -> int:
    args: dict[str, int | float | None] = {
        "workers_per_core": 1.0,
        "min_workers": 1,
        "max_workers": None,
        "memory_bytes": None,
        "worker_memory_mb": 128,
    }
    args.update(kwargs)
    return compute_workers(cpus=cpus, **args)  # type: ignore[arg-type]


class TestComputeWorkers:
    def test_rounds_up(self) -> None:
        """1.5 CPUs at one worker per core is 2 workers; 0.5 is 1."""
        assert compute(1.5) == 2
        assert compute(0.5) == 1
        assert compute(4.0) == 4

    def test_per_core(self) -> None:
        """WORKERS_PER_CORE multiplies the usable CPUs."""
        assert compute(2.0, workers_per_core=3) == 6
        assert compute(1.0, workers_per_core=0.5) == 1

    def test_bounds(self) -> None:
        """MIN and MAX bound the computed count."""
        assert compute(0.25, min_workers=2) == 2
        assert compute(64.0, max_workers=8) == 8

    def test_memory_caps_even_below_minimum(self) -> None:
        """The memory limit divided by the per-worker budget wins over the minimum, never below 1."""
        assert compute(8.0, memory_bytes=512 * MIB) == 4
        assert compute(2.0, min_workers=4, memory_bytes=256 * MIB) == 2
        assert compute(2.0, memory_bytes=64 * MIB) == 1
        assert compute(8.0, memory_bytes=512 * MIB, worker_memory_mb=0) == 8


class TestWorkerCount:
    def test_web_concurrency_is_exact(self, tmp_path: Path) -> None:
        """WEB_CONCURRENCY ignores CPUs, bounds and memory."""
        root, proc = v2_tree(tmp_path)
        write(root / "cpu.max", "50000 100000")
        settings = load_settings(web_concurrency=7, max_workers=2, cgroup_root=str(root))
        assert worker_count(settings, proc).workers == 7

    def test_fake_cgroup_quota_and_memory(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """On a 16-CPU host, a quota of 3 CPUs gives 3 workers; a 256 MiB limit caps them at 2."""
        monkeypatch.setattr(os, "cpu_count", lambda: 16)
        monkeypatch.setattr(cpu, "affinity_count", lambda: 16)
        root, proc = v2_tree(tmp_path)
        write(root / "cpu.max", "300000 100000")
        write(root / "memory.max", str(256 * MIB))
        settings = load_settings(cgroup_root=str(root), min_workers=1)
        assert worker_count(settings.model_copy(update={"worker_memory_mb": 0}), proc).workers == 3
        count = worker_count(settings, proc)
        assert count.workers == 2
        assert "3 CPUs (cgroup)" in count.reason and "256 MiB" in count.reason
