"""Reading CPU and memory limits from fake cgroup v1 and v2 trees."""

from __future__ import annotations

from pathlib import Path

from opskit.serving import cgroup


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def v2_tree(tmp_path: Path, cgroup_path: str = "/") -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    write(root / "cgroup.controllers", "cpuset cpu io memory pids")
    proc = tmp_path / "proc-self-cgroup"
    write(proc, f"0::{cgroup_path}")
    return root, proc


def v1_tree(tmp_path: Path, cpu_path: str = "/", memory_path: str = "/") -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    (root / "cpu,cpuacct").mkdir(parents=True)
    (root / "memory").mkdir()
    proc = tmp_path / "proc-self-cgroup"
    write(proc, f"12:memory:{memory_path}\n4:cpu,cpuacct:{cpu_path}\n1:name=systemd:/x\n0::/")
    return root, proc


class TestMembership:
    def test_parses_v1_and_v2_lines(self, tmp_path: Path) -> None:
        """Each controller maps to its path; the unified hierarchy is the empty controller."""
        _, proc = v1_tree(tmp_path, cpu_path="/kubepods/pod1/c1", memory_path="/kubepods/pod1/c1")
        paths = cgroup.membership(proc)
        assert paths["cpu"] == paths["cpuacct"] == "/kubepods/pod1/c1"
        assert paths["memory"] == "/kubepods/pod1/c1"
        assert paths[""] == "/"

    def test_missing_file_is_empty(self, tmp_path: Path) -> None:
        """Without /proc/self/cgroup (not Linux) there is no membership."""
        assert cgroup.membership(tmp_path / "absent") == {}


class TestCpuV2:
    def test_quota_in_own_cgroup(self, tmp_path: Path) -> None:
        """cpu.max `150000 100000` is 1.5 CPUs."""
        root, proc = v2_tree(tmp_path)
        write(root / "cpu.max", "150000 100000")
        assert cgroup.cpu_limit(root, proc) == 1.5

    def test_max_is_unlimited(self, tmp_path: Path) -> None:
        """cpu.max `max 100000` means no quota."""
        root, proc = v2_tree(tmp_path)
        write(root / "cpu.max", "max 100000")
        assert cgroup.cpu_limit(root, proc) is None

    def test_nested_cgroup_takes_tightest_ancestor(self, tmp_path: Path) -> None:
        """The process's cgroup is found through /proc/self/cgroup and its ancestors are read too."""
        root, proc = v2_tree(tmp_path, "/kubepods.slice/pod1/container1")
        write(root / "kubepods.slice" / "cpu.max", "max 100000")
        write(root / "kubepods.slice" / "pod1" / "cpu.max", "50000 100000")
        write(root / "kubepods.slice" / "pod1" / "container1" / "cpu.max", "200000 100000")
        assert cgroup.cpu_limit(root, proc) == 0.5

    def test_cgroup_namespace_reads_the_mount_root(self, tmp_path: Path) -> None:
        """When the path in /proc does not exist under the mount (namespaced), the root is the own cgroup."""
        root, proc = v2_tree(tmp_path, "/not/visible/here")
        write(root / "cpu.max", "300000 100000")
        assert cgroup.cpu_limit(root, proc) == 3.0

    def test_path_above_the_namespace_root_reads_the_mount_root(self, tmp_path: Path) -> None:
        """A `/../..` path (process outside the namespace root) never reads files above the mount."""
        root, proc = v2_tree(tmp_path, "/../..")
        write(root / "cpu.max", "200000 100000")
        write(tmp_path / "cpu.max", "10000 100000")  # above the mount: must be ignored
        assert cgroup.cpu_limit(root, proc) == 2.0

    def test_garbage_is_ignored(self, tmp_path: Path) -> None:
        """An unreadable cpu.max counts as no limit, never as an error."""
        root, proc = v2_tree(tmp_path)
        write(root / "cpu.max", "lots")
        assert cgroup.cpu_limit(root, proc) is None


class TestCpuV1:
    def test_quota_and_period(self, tmp_path: Path) -> None:
        """cfs_quota_us / cfs_period_us gives the CPUs."""
        root, proc = v1_tree(tmp_path, cpu_path="/docker/abc")
        write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us", "250000")
        write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_period_us", "100000")
        assert cgroup.cpu_limit(root, proc) == 2.5

    def test_minus_one_is_unlimited(self, tmp_path: Path) -> None:
        """A quota of -1 means no limit."""
        root, proc = v1_tree(tmp_path)
        write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1")
        write(root / "cpu,cpuacct" / "cpu.cfs_period_us", "100000")
        assert cgroup.cpu_limit(root, proc) is None

    def test_parent_limit_applies(self, tmp_path: Path) -> None:
        """A limit on the parent cgroup caps an unlimited child."""
        root, proc = v1_tree(tmp_path, cpu_path="/kubepods/pod1/c1")
        mount = root / "cpu,cpuacct"
        write(mount / "kubepods" / "pod1" / "cpu.cfs_quota_us", "100000")
        write(mount / "kubepods" / "pod1" / "cpu.cfs_period_us", "100000")
        write(mount / "kubepods" / "pod1" / "c1" / "cpu.cfs_quota_us", "-1")
        write(mount / "kubepods" / "pod1" / "c1" / "cpu.cfs_period_us", "100000")
        assert cgroup.cpu_limit(root, proc) == 1.0

    def test_no_cpu_controller(self, tmp_path: Path) -> None:
        """Without a cpu controller mounted there is no limit."""
        assert cgroup.cpu_limit(tmp_path, tmp_path / "absent") is None


class TestMemory:
    def test_v2_memory_max(self, tmp_path: Path) -> None:
        """memory.max in bytes; `max` is unlimited; the tightest level wins."""
        root, proc = v2_tree(tmp_path, "/pod/c")
        write(root / "pod" / "memory.max", str(512 * 2**20))
        write(root / "pod" / "c" / "memory.max", "max")
        assert cgroup.memory_limit(root, proc) == 512 * 2**20

    def test_v1_huge_value_is_unlimited(self, tmp_path: Path) -> None:
        """v1 reports no limit as a huge number."""
        root, proc = v1_tree(tmp_path)
        write(root / "memory" / "memory.limit_in_bytes", "9223372036854771712")
        assert cgroup.memory_limit(root, proc) is None

    def test_v1_limit(self, tmp_path: Path) -> None:
        """v1 memory.limit_in_bytes of the process's memory cgroup."""
        root, proc = v1_tree(tmp_path, memory_path="/docker/abc")
        write(root / "memory" / "docker" / "abc" / "memory.limit_in_bytes", str(2**30))
        assert cgroup.memory_limit(root, proc) == 2**30
