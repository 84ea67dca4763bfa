"""The value store of one process: a memory map written in place, readable by every process.

With a directory (``PROMETHEUS_MULTIPROC_DIR``) the store is a file ``opskit-<pid>-<token>.mmap``
there, which every worker reads at scrape time. Without one it is anonymous memory. Either
way an update is a float64 add at a fixed index of a ``memoryview`` over the map (about 50 ns),
done under :attr:`Store.lock` so that threads other than the event loop's may update too.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import secrets
import struct
import threading
import weakref
from typing import Final

from .layout import (
    ENTRY,
    EXEMPLAR_BYTES,
    HEADER,
    MAGIC,
    TRACE_ID_BYTES,
    USED_OFFSET,
    entries,
    padded,
)

__all__ = ["FILE_PREFIX", "FILE_SUFFIX", "Store", "process_start_time"]

FILE_PREFIX: Final = "opskit-"
FILE_SUFFIX: Final = ".mmap"
_INITIAL_SIZE: Final = 1 << 16
_USED = struct.Struct("<Q")


def process_start_time(pid: int) -> int:
    """The kernel's start time of ``pid`` (clock ticks since boot), 0 when unknown.

    With the pid it identifies a process even after the pid is reused.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return 0


class Store:
    """The values of every series this process updates, at fixed indexes.

    ``v`` is a float64 view of the map; a series owns ``v[i:i+n]`` from :meth:`allocate` on.
    Hold :attr:`lock` while reading or writing ``v`` and never keep a reference to it: it is
    replaced when the map grows.
    """

    def __init__(self, directory: str | None = None) -> None:
        self.directory = directory
        self.lock = threading.Lock()
        self.path: str | None = None
        self._fd = -1
        self._used = HEADER.size
        self._size = 0
        self._mm: mmap.mmap | None = None
        self.raw = memoryview(b"")
        self.v = memoryview(b"").cast("d")
        self._open()
        _stores.add(self)

    # -- lifecycle ---------------------------------------------------------------------------

    def _open(self, size: int = _INITIAL_SIZE) -> None:
        pid = os.getpid()
        if self.directory is not None:
            os.makedirs(self.directory, exist_ok=True)
            name = f"{FILE_PREFIX}{pid}-{secrets.token_hex(4)}{FILE_SUFFIX}"
            self.path = os.path.join(self.directory, name)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self._used = HEADER.size
        self._map(size)
        HEADER.pack_into(self.raw, 0, MAGIC, HEADER.size, pid, process_start_time(pid))

    def _map(self, size: int) -> None:
        old = self._mm
        if self._fd >= 0:
            os.ftruncate(self._fd, size)
            mm = mmap.mmap(self._fd, size)
        else:
            mm = mmap.mmap(-1, size)
            if old is not None:
                mm[: self._used] = old[: self._used]
        self.v.release()
        self.raw.release()
        if old is not None:
            old.close()
        self._mm = mm
        self._size = size
        self.raw = memoryview(mm)
        self.v = self.raw.cast("d")

    def _set_used(self, used: int) -> None:
        self._used = used
        _USED.pack_into(self.raw, USED_OFFSET, used)

    def close(self) -> None:
        """Unmap and close (the file stays for the scrape to read)."""
        with self.lock:
            self.v.release()
            self.raw.release()
            if self._mm is not None:
                self._mm.close()
                self._mm = None
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
        _stores.discard(self)

    def _after_fork(self) -> None:
        # The child must not write into its parent's file or count its parent's values again.
        # Keep the layout (series keep their indexes), start from zero, in a file of its own.
        self.lock = threading.Lock()
        layout = bytes(self.raw[: self._used])
        used = self._used
        if self._fd >= 0:
            self.v.release()
            self.raw.release()
            if self._mm is not None:
                self._mm.close()
            os.close(self._fd)
            self._mm = None
            self._fd = -1
            self._open(self._size)
            self.raw[HEADER.size : used] = layout[HEADER.size : used]
            self._set_used(used)
        else:
            pid = os.getpid()
            HEADER.pack_into(self.raw, 0, MAGIC, used, pid, process_start_time(pid))
        self._zero_values()

    def _zero_values(self) -> None:
        offset = HEADER.size
        for entry in entries(self.raw, self._used):
            start = offset + ENTRY.size + padded(len(entry.key))
            end = start + 8 * len(entry.values) + EXEMPLAR_BYTES * len(entry.exemplars)
            self.raw[start:end] = bytes(end - start)
            offset = end

    # -- writing -----------------------------------------------------------------------------

    def allocate(self, key: bytes, n_values: int, n_exemplars: int, mode: int) -> int:
        """Append a series; return the index in :attr:`v` of its first value. Hold the lock."""
        key_len = len(key)
        start = self._used
        values_at = start + ENTRY.size + padded(key_len)
        end = values_at + 8 * n_values + EXEMPLAR_BYTES * n_exemplars
        if end > self._size:
            size = self._size
            while size < end:
                size *= 2
            self._map(size)
        ENTRY.pack_into(self.raw, start, key_len, n_values, n_exemplars, mode)
        self.raw[start + ENTRY.size : start + ENTRY.size + key_len] = key
        self._set_used(end)
        return values_at // 8

    def exemplar(self, index: int, trace_id: str, value: float, timestamp: float) -> None:
        """Record an exemplar in the slot whose first float64 is ``v[index]``. Hold the lock."""
        at = index * 8
        tid = trace_id.encode("ascii", "replace")[:TRACE_ID_BYTES]
        raw = self.raw
        raw[at : at + TRACE_ID_BYTES] = tid.ljust(TRACE_ID_BYTES, b"\0")
        v = self.v
        v[index + 4] = value
        v[index + 5] = timestamp

    def snapshot(self) -> bytes:
        """A copy of the used part of the store (for the single-process scrape)."""
        with self.lock:
            return bytes(self.raw[: self._used])


_stores: weakref.WeakSet[Store] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for store in list(_stores):
        with contextlib.suppress(Exception):
            store._after_fork()


os.register_at_fork(after_in_child=_reset_after_fork)
