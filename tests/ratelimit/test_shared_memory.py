"""The shared-memory backend: one table, many processes, the semantics of the per-process buckets."""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from opskit.ratelimit import MemoryBackend, parse_rates
from opskit.ratelimit.shared_memory import RATES, WAYS, SharedMemoryBackend, create_table
from tests.servers import ROOT


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def table(tmp_path: Path) -> Iterator[str]:
    yield str(tmp_path / "ratelimit.table")


def fingerprints(path: str) -> list[int]:
    """Every way's fingerprint of a one-set table, read from the file itself."""
    with open(path, "rb") as f:
        f.seek(64)
        return list(struct.unpack(f"<{WAYS}Q", f.read(8 * WAYS)))


class TestSharing:
    def test_two_processes_views_share_one_bucket(self, table: str) -> None:
        """Two backends on one table spend from the same bucket: burst 5 admits 5 in all."""
        rates = parse_rates("1/minute burst=5")
        a, b = SharedMemoryBackend(table), SharedMemoryBackend(table)
        outcomes = [(a if i % 2 else b).decide("k", rates).allowed for i in range(10)]
        assert outcomes == [True] * 5 + [False] * 5
        assert len(a) == 1

    def test_workers_share_a_table_made_before_they_start(self) -> None:
        """A table from create_table() (a memfd) reaches a child process through the descriptor it inherits."""
        path = create_table(1000)
        fd = int(path.rsplit("/", 1)[1])
        child = subprocess.run(
            [sys.executable, "-m", "tests.ratelimit.table_worker", "decide", path, "1/minute burst=3", "2", "k"],
            pass_fds=[fd],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        )
        assert child.stdout.strip() == "2"
        backend = SharedMemoryBackend(path)
        assert [backend.decide("k", parse_rates("1/minute burst=3")).allowed for _ in range(2)] == [True, False]

    @pytest.mark.parametrize("spec", ["5/second burst=10", "10/second burst=3, 20/minute", "1/hour"])
    def test_decisions_match_the_per_process_backend(self, table: str, spec: str) -> None:
        """The same requests at the same times get the same verdicts and headers as MemoryBackend's."""
        rates = parse_rates(spec)
        clock = Clock()
        shared, memory = SharedMemoryBackend(table, clock=clock), MemoryBackend(clock=clock)
        rng = random.Random(7)
        for _ in range(300):
            clock.now += rng.choice([0.0, 0.0, 0.01, 0.1, 0.5, 2.0])
            key = rng.choice(["a", "b"])
            cost = rng.choice([1, 1, 2])
            assert shared.decide(key, rates, cost) == memory.decide(key, rates, cost)

    def test_force_puts_the_bucket_in_debt(self, table: str) -> None:
        """A forced spend past the burst is taken, says it would have been refused, and later requests wait."""
        rates = parse_rates("1/second burst=2")
        clock = Clock()
        backend = SharedMemoryBackend(table, clock=clock)
        forced = backend.decide("k", rates, 5, force=True)
        assert not forced.allowed
        refused = backend.decide("k", rates)
        assert not refused.allowed
        assert refused.retry_after == pytest.approx(4.0)
        clock.now += 4.0
        assert backend.decide("k", rates).allowed

    def test_policies_of_more_rates_than_a_slot_holds_are_decided_per_process(self, table: str) -> None:
        """A policy of 5 rates still gets exact per-process verdicts."""
        rates = parse_rates(", ".join(f"{n}/minute burst=2" for n in range(1, RATES + 2)))
        backend = SharedMemoryBackend(table)
        assert [backend.decide("k", rates).allowed for _ in range(3)] == [True, True, False]
        assert len(backend) == 0


class TestBoundedTable:
    def test_the_least_recently_used_key_of_a_set_gives_way(self, table: str) -> None:
        """A one-set table holds 8 keys; a 9th takes the way of the key used longest ago."""
        clock = Clock()
        rates = parse_rates("1/hour")
        backend = SharedMemoryBackend(table, max_keys=WAYS, clock=clock)
        assert backend.sets == 1
        for i in range(WAYS):
            clock.now += 1
            assert backend.decide(f"k{i}", rates).allowed
        clock.now += 1
        backend.decide("k0", rates)  # k0 is now the most recent; k1 the oldest
        clock.now += 1
        assert backend.decide("new", rates).allowed
        assert len(backend) == WAYS
        assert backend.decide("k1", rates).allowed  # evicted: a fresh bucket
        assert not backend.decide("k0", rates).allowed  # kept its spent bucket

    def test_an_existing_table_keeps_its_size(self, table: str) -> None:
        """A process opening a table made for 8 keys uses it as it is, whatever its own max_keys."""
        SharedMemoryBackend(table, max_keys=WAYS)
        assert SharedMemoryBackend(table, max_keys=100_000).sets == 1

    def test_a_file_that_is_no_table_is_made_one(self, table: str) -> None:
        """Garbage in the named file is replaced by an empty table, not read as buckets."""
        Path(table).write_bytes(os.urandom(5000))
        backend = SharedMemoryBackend(table, max_keys=WAYS)
        assert len(backend) == 0
        assert backend.decide("k", parse_rates("1/hour")).allowed


@pytest.mark.slow
class TestCrashes:
    def test_workers_killed_mid_decision_leave_no_lock_and_no_torn_bucket(self, table: str) -> None:
        """SIGKILL 12 processes deciding in a loop (evicting all the time), 4 at a time: every lock is free at
        once, every way holds an empty slot or one of its keys, and each key's bucket stays valid."""
        str_rates = "1000/second burst=5, 100/minute"
        rates = parse_rates(str_rates)
        keys = [f"key-{i}" for i in range(12)]  # more keys than ways: new keys evict on every pass
        backend = SharedMemoryBackend(table, max_keys=WAYS)
        valid = {backend._slot_of(key)[1] for key in keys} | {0}
        busy: list[bool] = []
        backend.on_busy = lambda: busy.append(True)
        argv = [sys.executable, "-m", "tests.ratelimit.table_worker", "loop", table, str_rates, *keys]
        for _ in range(3):
            children = [subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=ROOT) for _ in range(4)]
            for child in children:
                assert child.stdout is not None
                assert child.stdout.readline() == b"deciding\n"
            for child in children:  # each killed at a random moment of its loop
                time.sleep(random.uniform(0.002, 0.02))
                child.kill()
                child.wait()
                assert child.stdout is not None
                child.stdout.close()
            assert set(fingerprints(table)) <= valid
            for key in keys:
                decision = backend.decide(key, rates)
                assert 0 <= decision.remaining <= 5
                assert decision.reset <= 60.0 + 1e-6
        assert not busy

    def test_a_frozen_lock_holder_costs_a_bounded_wait_then_this_workers_own_bucket(self, table: str) -> None:
        """While another process holds a set's lock, decisions wait at most the budget, fall back to the
        worker's own buckets and report it; once the holder is gone they are shared again."""
        backend = SharedMemoryBackend(table, max_keys=WAYS)
        busy: list[bool] = []
        backend.on_busy = lambda: busy.append(True)
        rates = parse_rates("1/hour burst=2")
        holder = subprocess.Popen(
            [sys.executable, "-m", "tests.ratelimit.table_worker", "hold", table, "0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        assert holder.stdin is not None and holder.stdout is not None
        try:
            assert holder.stdout.readline() == b"locked\n"
            started = time.monotonic()
            assert backend.decide("k", rates).allowed
            assert time.monotonic() - started < 1.0
            assert busy == [True]
            assert len(backend) == 0  # not in the table
        finally:
            holder.stdin.close()
            holder.wait()
            holder.stdout.close()
        assert [backend.decide("k", rates).allowed for _ in range(3)] == [True, True, False]
        assert len(backend) == 1
