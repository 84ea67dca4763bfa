"""The embedded backend shared by the workers of one server: token buckets in a shared memory table.

Without Redis each worker used to keep its own buckets, so N workers let N times the limit through.
The workers of one ``opskit serve`` now decide in one table, mapped by every worker from the same
file (a ``memfd`` the master creates before forking, or a file named by
``OPSKIT_RATE_LIMIT_SHARED_FILE``). The layout::

    header  (64 bytes)   magic, number of sets, ways, rates per slot, boot id
    set     (384 bytes)  8 fingerprints (u64), 8 last-use times (f64), 8 slots of 4 TATs (f64)

A key's 128-bit hash picks its set and its fingerprint; the key lives in one of the set's 8 ways.
A new key takes the way used least recently (an empty way first): the table is bounded, and
eviction is LRU within a set, as in a CPU cache, so no decision ever touches more than one set.

**Locking.** Each set has its own lock: a POSIX record lock (``fcntl``) on one byte of the file,
taken without blocking, retried with ``sched_yield`` for at most :data:`LOCK_BUDGET` seconds. The
kernel releases a process's record locks when it dies, SIGKILL included, so a worker killed inside
a decision leaves no lock behind; a holder that is merely descheduled holds it for microseconds
(the critical section reads and writes a few floats, no I/O, no await). Should a lock stay busy
past the budget (a holder frozen by SIGSTOP), the decision is taken in this worker's own
buckets instead and reported through ``on_busy``: the event loop never waits longer. A lock-free
design (a seqlock) would need compare-and-swap on shared memory, which Python does not have.
POSIX locks do not exclude threads of one process, so a thread lock is taken first.

**Crash safety.** Every value is an aligned 8-byte word, written with one store, so no reader ever
sees half a value. A decision on a known key only moves its TATs forward; one killed halfway has
charged some of its rates and not others, never more than its cost. A new key clears the victim's
fingerprint first, then writes its TATs, then its own fingerprint: a worker killed in between
leaves an empty way, never one key's bucket under another key's name.

Times are ``CLOCK_MONOTONIC``, the same for every process of the host; the boot id in the header
makes a table file that outlived a reboot start empty. A named file that is no table is made one;
a descriptor path (``/proc/self/fd/N``) whose file is no table is refused, never overwritten: in a
process that did not inherit the master's descriptor, ``N`` may be any file of its own.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import mmap
import os
import struct
import threading
import time
import weakref
from collections.abc import Callable, Sequence

from .decision import Decision
from .memory import MemoryBackend
from .rate import Rate

__all__ = ["DESCRIPTOR_PATHS", "LOCK_BUDGET", "RATES", "WAYS", "SharedMemoryBackend", "create_table", "table_size"]

MAGIC = b"OPSKRLT1"
WAYS = 8
RATES = 4  # rates per slot: a policy with more is decided per process
LOCK_BUDGET = 0.005
_HEADER = struct.Struct("<8sQQQ16s")
_HEADER_BYTES = 64
_SET_WORDS = WAYS * 2 + WAYS * RATES
_SET_BYTES = _SET_WORDS * 8
_FINGERPRINT = struct.Struct("<Q")
_FINGERPRINTS = struct.Struct(f"<{WAYS}Q")
_USED = struct.Struct(f"<{WAYS}d")
_KEY_CACHE_SIZE = 4096
_BUSY = (errno.EACCES, errno.EAGAIN)
# Paths of a table a master made: reached through the descriptor its workers inherit.
DESCRIPTOR_PATHS = ("/proc/self/fd/", "/dev/fd/")


def _boot_id() -> bytes:
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            return bytes.fromhex(f.read().strip().decode().replace("-", ""))[:16]
    except (OSError, ValueError):
        return bytes(16)


def _sets_for(max_keys: int) -> int:
    sets = 1
    while sets * WAYS < max_keys:
        sets *= 2
    return sets


def table_size(max_keys: int) -> int:
    """Bytes of a table holding at least ``max_keys`` keys (pages are only used once written)."""
    return _HEADER_BYTES + _sets_for(max_keys) * _SET_BYTES


def _initialize(fd: int, max_keys: int) -> None:
    """Give the file behind ``fd`` an empty table (the caller holds the header lock)."""
    os.ftruncate(fd, 0)
    os.ftruncate(fd, table_size(max_keys))
    os.pwrite(fd, _HEADER.pack(MAGIC, _sets_for(max_keys), WAYS, RATES, _boot_id()), 0)


def create_table(max_keys: int) -> str:
    """Create an empty table for the workers a server is about to fork; returns the path they open.

    A ``memfd`` (anonymous shared memory, gone with the last process holding it), reached as
    ``/proc/self/fd/N`` through the descriptor every worker inherits; where there is no ``memfd``,
    an unlinked temporary file behind ``/dev/fd/N``.
    """
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("opskit-ratelimit")
        os.set_inheritable(fd, False)  # forked workers inherit it; exec'd programs need not
        path = f"/proc/self/fd/{fd}"
    else:  # pragma: no cover - macOS development machines
        import tempfile

        fd, name = tempfile.mkstemp(prefix="opskit-ratelimit-")
        os.unlink(name)
        path = f"/dev/fd/{fd}"
    _initialize(fd, max_keys)
    return path


class SharedMemoryBackend(MemoryBackend):
    """Token buckets shared by every process that opens the same table file, as exact as one process.

    Same semantics as :class:`MemoryBackend` (whose per-process buckets it keeps for the fallbacks
    below). ``max_keys`` sizes a table this process creates; an existing table keeps its size.
    A policy of more than :data:`RATES` rates, and a decision whose set stays locked past
    :data:`LOCK_BUDGET`, are decided in this process's own buckets; the latter calls ``on_busy``.
    """

    shared = False  # across this server's workers, not across pods

    def __init__(
        self,
        path: str,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        on_busy: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(max_keys, clock)
        self.path = path
        self.on_busy = on_busy
        self._thread_lock = threading.Lock()
        inherited = path.startswith(DESCRIPTOR_PATHS)
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | (0 if inherited else os.O_CREAT), 0o600)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0)
            try:
                header = os.pread(fd, _HEADER.size, 0)
                fields = _HEADER.unpack(header) if len(header) == _HEADER.size else None
                valid = (
                    fields is not None
                    and fields[0] == MAGIC
                    and fields[2:] == (WAYS, RATES, _boot_id())
                    and os.fstat(fd).st_size == _HEADER_BYTES + fields[1] * _SET_BYTES
                )
                if not valid and inherited:
                    # A descriptor this process did not inherit from a server's master: never clobber it.
                    raise OSError(errno.EINVAL, f"{path} is not a rate-limit table")
                if not valid:
                    _initialize(fd, max_keys)
                    header = os.pread(fd, _HEADER.size, 0)
                self.sets = _HEADER.unpack(header)[1]
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, 0)
            self._map = mmap.mmap(fd, _HEADER_BYTES + self.sets * _SET_BYTES)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._words = memoryview(self._map).cast("Q")
        self._floats = memoryview(self._map).cast("d")
        self._mask = self.sets - 1
        self._slots: dict[str, tuple[int, int]] = {}
        _backends.add(self)

    def __len__(self) -> int:
        """Keys in the table (a scan: for tests and tools, not the hot path)."""
        words = self._words
        count = 0
        for s in range(self.sets):
            base = (_HEADER_BYTES + s * _SET_BYTES) // 8
            count += sum(1 for fp in words[base : base + WAYS] if fp)
        return count

    def _slot_of(self, key: str) -> tuple[int, int]:
        """The set and fingerprint of ``key`` (cached: the hash is a third of a decision's cost)."""
        found = self._slots.get(key)
        if found is None:
            digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=16).digest()
            fp = int.from_bytes(digest[:8], "little") or 1  # 0 marks an empty way
            found = (int.from_bytes(digest[8:], "little") & self._mask, fp)
            if len(key) <= 512:
                if len(self._slots) >= _KEY_CACHE_SIZE:
                    self._slots.clear()
                self._slots[key] = found
        return found

    def _acquire(self, s: int) -> bool:
        fd = self._fd
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 1 + s)
            return True
        except OSError as exc:
            if exc.errno not in _BUSY:
                return False
        deadline = time.monotonic() + LOCK_BUDGET
        while time.monotonic() < deadline:
            os.sched_yield()  # the holder is inside a section of a few microseconds: let it run
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 1 + s)
                return True
            except OSError as exc:
                if exc.errno not in _BUSY:
                    return False
        return False

    def decide(self, key: str, rates: Sequence[Rate], cost: int = 1, *, force: bool = False) -> Decision:
        """Take ``cost`` tokens from the shared bucket ``key`` if every rate has them.

        ``force`` spends them even when the bucket lacks them (it goes into debt); the decision
        still says whether the request would have passed.
        """
        if len(rates) > RATES:
            return self._per_process(key, rates, cost, force)
        s, fp = self._slot_of(key)
        with self._thread_lock:
            if not self._acquire(s):
                if self.on_busy is not None:
                    self.on_busy()
                return self._per_process(key, rates, cost, force)
            try:
                if len(rates) == 1:
                    return self._decide_shared_one(s, fp, rates[0], cost, force)
                return self._decide_shared(s, fp, rates, cost, force)
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, 1 + s)

    def _per_process(self, key: str, rates: Sequence[Rate], cost: int, force: bool) -> Decision:
        decide: Callable[..., Decision] = super().decide
        return decide(key, rates, cost, force=True) if force else decide(key, rates, cost)

    def _way(self, at: int, fp: int) -> tuple[int, bool]:
        """The way of ``fp`` in the set at byte ``at`` and whether it is there, else the way to evict."""
        # A byte search finds the fingerprint without making eight Python ints of the set's.
        found = self._map.find(_FINGERPRINT.pack(fp), at, at + 8 * WAYS)
        if found >= 0 and not (found - at) & 7:
            return (found - at) >> 3, True
        fps = _FINGERPRINTS.unpack_from(self._map, at)
        if fp in fps:
            return fps.index(fp), True
        used = _USED.unpack_from(self._map, at + WAYS * 8)
        return min(range(WAYS), key=lambda w: (fps[w] != 0, used[w])), False

    def _decide_shared_one(self, s: int, fp: int, rate: Rate, cost: int, force: bool) -> Decision:
        # _decide_shared() unrolled for the common single-rate policy: this runs on every request.
        at = _HEADER_BYTES + s * _SET_BYTES
        base = at >> 3
        way, known = self._way(at, fp)
        floats = self._floats
        tats_at = base + 2 * WAYS + way * RATES
        now = self._clock()
        interval = rate.interval
        capacity = rate.burst * interval
        tat = floats[tats_at] if known else 0.0
        start = tat if tat > now else now
        end = start + cost * interval
        allowed = end - now <= capacity + 1e-9
        if allowed or force:
            if known:
                floats[tats_at] = end
            else:
                words = self._words
                words[base + way] = 0  # the victim is gone before the newcomer's TATs go in
                floats[tats_at] = end
                for i in range(1, RATES):
                    floats[tats_at + i] = 0.0
                words[base + way] = fp
            floats[base + WAYS + way] = now
            remaining = max(0, int((capacity - (end - now)) / interval + 1e-9))
            if allowed:
                return Decision("allowed", rate, remaining, 0.0, end - now)
            return Decision("limited", rate, remaining, end - now - capacity, end - now)
        if known:
            floats[base + WAYS + way] = now
        remaining = max(0, int((capacity - (start - now)) / interval + 1e-9))
        return Decision("limited", rate, remaining, end - now - capacity, start - now)

    def _decide_shared(self, s: int, fp: int, rates: Sequence[Rate], cost: int, force: bool) -> Decision:
        words = self._words
        floats = self._floats
        base = (_HEADER_BYTES + s * _SET_BYTES) // 8
        at = _HEADER_BYTES + s * _SET_BYTES
        now = self._clock()
        way, known = self._way(at, fp)
        tats_at = base + 2 * WAYS + way * RATES
        n = len(rates)
        allowed = True
        starts: list[float] = []
        ends: list[float] = []
        for i in range(n):
            rate = rates[i]
            tat = floats[tats_at + i] if known else 0.0
            start = tat if tat > now else now
            end = start + cost * rate.interval
            starts.append(start)
            ends.append(end)
            if end - now > rate.burst * rate.interval + 1e-9:
                allowed = False
        final = ends if allowed or force else starts
        if allowed or force:
            if known:
                for i in range(n):
                    floats[tats_at + i] = final[i]
            else:
                words[base + way] = 0  # the victim is gone before the newcomer's TATs go in
                for i in range(RATES):
                    floats[tats_at + i] = final[i] if i < n else 0.0
                words[base + way] = fp
        if known or allowed or force:
            floats[base + WAYS + way] = now
        best = 0
        best_remaining = -1
        retry = 0.0
        for i in range(n):
            rate = rates[i]
            remaining = int((rate.burst * rate.interval - (final[i] - now)) / rate.interval + 1e-9)
            if best_remaining < 0 or remaining < best_remaining:
                best, best_remaining = i, remaining
            if not allowed:
                retry = max(retry, ends[i] - now - rate.burst * rate.interval)
        return Decision(
            "allowed" if allowed else "limited",
            rates[best],
            max(0, best_remaining),
            retry,
            max(0.0, final[best] - now),
        )

    def close(self) -> None:
        """Unmap the table and close its file (the table stays for the other processes)."""
        self._words.release()
        self._floats.release()
        self._map.close()
        os.close(self._fd)


_backends: weakref.WeakSet[SharedMemoryBackend] = weakref.WeakSet()


def _after_fork() -> None:
    # A thread holding a backend's thread lock at fork would leave it locked in the child forever.
    for backend in list(_backends):
        backend._thread_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)
