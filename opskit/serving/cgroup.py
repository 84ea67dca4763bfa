"""The CPU and memory limits of this process's cgroup (v2 unified or v1 hierarchies).

A container's limits may be set on its own cgroup or on an ancestor (a Kubernetes pod's cgroup
holds the pod limit, the container's the container limit): every level from the process's
cgroup up to the mount root is read and the tightest limit wins. Paths are parameters so that
tests can point at a fake tree.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath

__all__ = ["cpu_limit", "is_v2", "membership", "memory_limit"]


DEFAULT_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")

# cgroup v1 reports "no limit" as a huge page-aligned number rather than a word.
_V1_UNLIMITED_MEMORY = 1 << 60


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def is_v2(root: Path) -> bool:
    """Whether ``root`` is a cgroup v2 (unified) mount."""
    return (root / "cgroup.controllers").is_file()


def membership(proc_cgroup: Path = PROC_SELF_CGROUP) -> dict[str, str]:
    """Map each controller (``""`` for the v2 unified hierarchy) to this process's cgroup path."""
    paths: dict[str, str] = {}
    text = _read(proc_cgroup) or ""
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            paths[""] = path
        for controller in controllers.split(","):
            if controller:
                paths[controller] = path
    return paths


def _levels(mount: Path, cgroup_path: str) -> Iterator[Path]:
    """The process's cgroup directory under ``mount`` and each ancestor up to ``mount`` itself.

    With a cgroup namespace (or a private mount) the path in /proc may not exist under the mount:
    the mount root is then the process's own cgroup.
    """
    relative = PurePosixPath(cgroup_path or "/").relative_to("/")
    leaf = mount / relative
    # "/../.." appears for a process outside the namespace's root: never read above the mount.
    if ".." in relative.parts or not leaf.is_dir():
        yield mount
        return
    yield leaf
    for parent in relative.parents:
        yield mount / parent


def _v1_mount(root: Path, controller: str) -> Path | None:
    for candidate in sorted(root.iterdir()) if root.is_dir() else ():
        if controller in candidate.name.split(",") and candidate.is_dir():
            return candidate
    return None


def _parse_cpu_max(text: str | None) -> float | None:
    if not text:
        return None
    parts = text.split()
    if not parts or parts[0] == "max":
        return None
    try:
        quota = int(parts[0])
        period = int(parts[1]) if len(parts) > 1 else 100_000
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def _parse_v1_cpu(quota_text: str | None, period_text: str | None) -> float | None:
    try:
        quota = int(quota_text or "-1")
        period = int(period_text or "0")
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def _parse_memory(text: str | None) -> int | None:
    if not text or text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    if value <= 0 or value >= _V1_UNLIMITED_MEMORY:
        return None
    return value


def _tightest(values: Iterator[float | None]) -> float | None:
    limits = [v for v in values if v is not None]
    return min(limits) if limits else None


def cpu_limit(root: Path = DEFAULT_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> float | None:
    """CPUs granted by the cgroup quota (``1.5`` for ``150000 100000``), or None when unlimited."""
    paths = membership(proc_cgroup)
    if is_v2(root):
        return _tightest(_parse_cpu_max(_read(level / "cpu.max")) for level in _levels(root, paths.get("", "/")))
    mount = _v1_mount(root, "cpu")
    if mount is None:
        return None
    return _tightest(
        _parse_v1_cpu(_read(level / "cpu.cfs_quota_us"), _read(level / "cpu.cfs_period_us"))
        for level in _levels(mount, paths.get("cpu", "/"))
    )


def memory_limit(root: Path = DEFAULT_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> int | None:
    """Bytes of memory the cgroup may use, or None when unlimited."""
    paths = membership(proc_cgroup)
    if is_v2(root):
        found = _tightest(_parse_memory(_read(level / "memory.max")) for level in _levels(root, paths.get("", "/")))
    else:
        mount = _v1_mount(root, "memory")
        if mount is None:
            return None
        found = _tightest(
            _parse_memory(_read(level / "memory.limit_in_bytes")) for level in _levels(mount, paths.get("memory", "/"))
        )
    return None if found is None else int(found)
