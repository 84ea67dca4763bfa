"""The usable CPU count: cgroup quota, affinity mask, host."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from opskit.serving import cpu
from tests.serving.test_cgroup import v2_tree, write


class TestUsableCpus:
    def test_quota_below_affinity_wins(self, tmp_path: Path) -> None:
        """A fractional quota is tighter than any whole affinity mask."""
        root, proc = v2_tree(tmp_path)
        write(root / "cpu.max", "50000 100000")
        assert cpu.usable_cpus(root, proc) == cpu.CpuCount(0.5, "cgroup")

    def test_affinity_below_quota_wins(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A process pinned to fewer CPUs than its quota gets the pinned count."""
        root, proc = v2_tree(tmp_path)
        write(root / "cpu.max", "800000 100000")
        monkeypatch.setattr(os, "cpu_count", lambda: 64)
        monkeypatch.setattr(cpu, "affinity_count", lambda: 3)
        assert cpu.usable_cpus(root, proc) == cpu.CpuCount(3.0, "affinity")

    def test_host_only_without_limits(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """With no quota and a full affinity mask, the host count is used."""
        root, proc = v2_tree(tmp_path)
        write(root / "cpu.max", "max 100000")
        monkeypatch.setattr(os, "cpu_count", lambda: 8)
        monkeypatch.setattr(cpu, "affinity_count", lambda: 8)
        assert cpu.usable_cpus(root, proc) == cpu.CpuCount(8.0, "host")

    def test_real_affinity(self) -> None:
        """The affinity count of this process is a positive number no larger than the host's."""
        count = cpu.affinity_count()
        assert count is not None and 1 <= count <= (os.cpu_count() or count)
