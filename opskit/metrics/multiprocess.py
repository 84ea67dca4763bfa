"""Several worker processes, one set of numbers: merging, dead-worker compaction, directory care.

Every worker writes its own store file in ``PROMETHEUS_MULTIPROC_DIR``; any worker answering a
scrape merges all of them. When a worker exits, its counters and histograms are folded into a
single archive file and its file is deleted, so the directory holds at most one file per live
worker plus the archive, however many workers came and went, and no counter ever goes back.

gunicorn: call :func:`prepare_directory` from ``on_starting`` and :func:`worker_exited` from
``child_exit``. Without those hooks (``uvicorn --workers``), the scrape folds files of dead
workers itself, so the directory stays bounded there too.

Why this is safe without stopping the writers:

* compaction runs under an exclusive ``flock`` on ``.lock``, so the master and any scraping worker
  can run it; it writes the new archive beside the old one and ``rename``\\ s it into place, and
  only then deletes the absorbed files;
* the archive names the files it absorbed; a reader reads the worker files first and the archive
  last, and skips worker files the archive has absorbed. Whichever moment the compaction happens
  relative to the reader, every count is read exactly once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

import orjson

from .layout import ABSORBED, GAUGE_MAX, GAUGE_SUM, SUM, Entry, Exemplar, encode, entries, read_header
from .store import FILE_PREFIX, FILE_SUFFIX

__all__ = ["ARCHIVE", "Merged", "merge_buffers", "prepare_directory", "read_directory", "worker_exited"]

ARCHIVE: Final = "opskit-archive.mmap"
_LOCK: Final = ".opskit.lock"
_KEEP_ABSORBED: Final = 1024  # names of absorbed files remembered (a reader would have to stall this long)


def prepare_directory(path: str) -> None:
    """Create ``path`` and delete everything in it (call once, before any worker starts)."""
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        target = os.path.join(path, name)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)


def worker_exited(pid: int, path: str | None = None) -> None:
    """Fold the counts of the exited worker ``pid`` into the archive and delete its file.

    ``path`` defaults to ``PROMETHEUS_MULTIPROC_DIR`` from the settings; nothing happens when
    there is no directory.
    """
    if path is None:
        from ..runtime import current

        path = current().settings.prometheus_multiproc_dir
        if not path:
            return
    prefix = f"{FILE_PREFIX}{pid}-"
    with contextlib.suppress(FileNotFoundError):
        names = [n for n in os.listdir(path) if n.startswith(prefix) and n.endswith(FILE_SUFFIX)]
        if names:
            compact(path, names)
    # prometheus_client's own files in the same directory (metrics defined with it directly)
    from prometheus_client.multiprocess import mark_process_dead

    with contextlib.suppress(OSError):
        mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def alive(pid: int, start_time: int) -> bool:
    """Whether the process that wrote a store still runs (a reused pid does not count)."""
    if pid == os.getpid():
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    except OSError:
        return _signal_alive(pid)
    rest = stat[stat.rindex(b")") + 2 :].split()
    if rest[0] in (b"Z", b"X"):  # killed, not reaped yet
        return False
    return start_time == 0 or int(rest[19]) == start_time


def _signal_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


@dataclass(slots=True)
class Merged:
    """The combined values and newest exemplars of one series."""

    mode: int
    values: list[float]
    exemplars: list[Exemplar | None]


def _add(out: dict[bytes, Merged], items: Iterable[Entry], live: bool) -> None:
    for e in items:
        if e.mode == ABSORBED:
            continue
        if e.mode != SUM and not live:
            continue  # gauges of dead processes are gone with them
        have = out.get(e.key)
        if have is None:
            out[e.key] = Merged(e.mode, e.values, e.exemplars)
            continue
        if len(have.values) != len(e.values) or have.mode != e.mode:
            continue  # a definition changed between deployments: keep the first seen
        if e.mode == SUM or e.mode == GAUGE_SUM:
            have.values = [a + b for a, b in zip(have.values, e.values, strict=True)]
        elif e.mode == GAUGE_MAX:
            have.values = [max(a, b) for a, b in zip(have.values, e.values, strict=True)]
        else:
            have.values = [min(a, b) for a, b in zip(have.values, e.values, strict=True)]
        for i, ex in enumerate(e.exemplars):
            old = have.exemplars[i] if i < len(have.exemplars) else None
            if ex is not None and (old is None or ex[2] > old[2]):
                have.exemplars[i] = ex


def merge_buffers(buffers: Iterable[bytes]) -> dict[bytes, Merged]:
    """Merge stores of live processes (the single-process scrape passes its own snapshot)."""
    out: dict[bytes, Merged] = {}
    for buf in buffers:
        header = read_header(buf)
        if header is not None:
            _add(out, entries(buf, header.used), live=True)
    return out


def _absorbed(buf: bytes | None) -> tuple[list[Entry], list[str]]:
    if buf is None:
        return [], []
    header = read_header(buf)
    if header is None:
        return [], []
    items = list(entries(buf, header.used))
    names: list[str] = []
    for e in items:
        if e.mode == ABSORBED:
            names = list(orjson.loads(e.key))
    return items, names


def _worker_files(path: str) -> Iterator[str]:
    for name in os.listdir(path):
        if name.startswith(FILE_PREFIX) and name.endswith(FILE_SUFFIX) and name != ARCHIVE:
            yield name


def read_directory(path: str, *, sweep: bool = True) -> dict[bytes, Merged]:
    """Merge every store in ``path``: live workers, exited workers not yet folded, the archive.

    With ``sweep``, files of workers that are gone are then folded into the archive (what
    gunicorn's ``child_exit`` hook does, for servers without one).
    """
    try:
        names = sorted(_worker_files(path))
    except FileNotFoundError:
        return {}
    workers: list[tuple[str, bytes]] = []
    for name in names:  # worker files first, the archive last: see the module docstring
        buf = _read(os.path.join(path, name))
        if buf is not None:
            workers.append((name, buf))
    archive, absorbed = _absorbed(_read(os.path.join(path, ARCHIVE)))
    skip = set(absorbed)
    out: dict[bytes, Merged] = {}
    dead: list[str] = []
    for name, buf in workers:
        if name in skip:
            dead.append(name)  # counted in the archive; left behind by an interrupted compaction
            continue
        header = read_header(buf)
        if header is None:
            continue
        live = alive(header.pid, header.start_time)
        if not live:
            dead.append(name)
        _add(out, entries(buf, header.used), live)
    _add(out, archive, live=False)
    if sweep and dead:
        compact(path, dead)
    return out


def compact(path: str, names: list[str]) -> None:
    """Fold the stores ``names`` (of exited workers) into the archive, then delete them."""
    with open(os.path.join(path, _LOCK), "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        archive, absorbed = _absorbed(_read(os.path.join(path, ARCHIVE)))
        merged: dict[bytes, Merged] = {}
        _add(merged, archive, live=False)
        done: list[str] = []
        for name in names:
            buf = _read(os.path.join(path, name))
            if buf is None:
                continue
            if name in absorbed:  # already counted: only the deletion was missed
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(path, name))
                continue
            header = read_header(buf)
            if header is not None:
                if alive(header.pid, header.start_time):
                    continue
                _add(merged, entries(buf, header.used), live=False)
            done.append(name)
        if not done:
            return
        absorbed = (absorbed + done)[-_KEEP_ABSORBED:]
        items = [Entry(key, m.mode, m.values, m.exemplars) for key, m in merged.items()]
        items.append(Entry(orjson.dumps(absorbed), ABSORBED, []))
        tmp = os.path.join(path, f".{ARCHIVE}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(encode(0, 0, items))
        os.replace(tmp, os.path.join(path, ARCHIVE))
        for name in done:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(path, name))
