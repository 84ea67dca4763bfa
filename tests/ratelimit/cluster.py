"""Real Redis topologies for failure tests: a Cluster whose masters can die, a Sentinel-watched master
with a replica to promote, and a probe of how long the event loop stays blocked.

Every process is a real redis-server (or redis-sentinel) on a free loopback port, stopped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from redis.crc import key_slot

from tests.servers import Background, RedisClusterServers, RedisServer, free_port, wait_for_port, which


class FailingCluster(RedisClusterServers):
    """A Redis Cluster of ``masters`` masters, no replicas, whose masters keep serving their slots
    while another one is down (``cluster-require-full-coverage no``): a killed master's slots stay
    unserved, the others' do not."""

    def __init__(self, masters: int = 3) -> None:
        super().__init__(masters, "--cluster-require-full-coverage", "no")
        self.masters = self.nodes
        self._slots = self._read_slots()

    def _read_slots(self) -> list[tuple[int, int, int]]:
        """``(first, last, port)`` of every slot range, from ``CLUSTER NODES``."""
        ranges = []
        for line in self.masters[0].cli("cluster", "nodes").splitlines():
            fields = line.split()
            port = int(fields[1].split("@")[0].rpartition(":")[2])
            for spec in fields[8:]:
                first, _, last = spec.partition("-")
                ranges.append((int(first), int(last or first), port))
        return ranges

    def master_of(self, key: str) -> RedisServer:
        """The master serving ``key``'s slot."""
        slot = key_slot(key.encode())
        port = next(port for first, last, port in self._slots if first <= slot <= last)
        return next(m for m in self.masters if m.port == port)

    def hand_over(self, slot: int, old: RedisServer, new: RedisServer) -> None:
        """Move an empty ``slot`` from ``old`` to ``new`` the way a resharding does (importing, migrating,
        then the new owner first): ``new`` bumps its config epoch, so gossip from ``old`` cannot hand
        the slot back to it and leave the two redirecting to each other."""
        old_id, new_id = old.cli("cluster", "myid").strip(), new.cli("cluster", "myid").strip()
        new.cli("cluster", "setslot", str(slot), "importing", old_id)
        old.cli("cluster", "setslot", str(slot), "migrating", new_id)
        for master in [new, old, *(m for m in self.masters if m is not old and m is not new)]:
            master.cli("cluster", "setslot", str(slot), "node", new_id)


@contextlib.contextmanager
def failing_cluster(masters: int = 3) -> Iterator[FailingCluster]:
    """A started :class:`FailingCluster`, stopped afterwards."""
    cluster = FailingCluster(masters)
    try:
        yield cluster
    finally:
        cluster.close()


class SentinelGroup:
    """A master, one replica and one Sentinel (quorum 1) that fails over within about a second."""

    name = "opskit-master"

    def __init__(self, down_after_ms: int = 500, failover_timeout_ms: int = 2000) -> None:
        self.master = RedisServer()
        self.replica: RedisServer | None = None
        self.sentinel: Background | None = None
        self.dir = tempfile.mkdtemp(prefix="opskit-sentinel-")
        try:
            self.replica = RedisServer("--replicaof", "127.0.0.1", str(self.master.port))
            self._wait(lambda: "master_link_status:up" in self._replica.cli("info", "replication"), "replication")
            self.port = free_port()
            conf = Path(self.dir) / "sentinel.conf"
            conf.write_text(
                f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {self.name} 127.0.0.1 {self.master.port} 1\n"
                f"sentinel down-after-milliseconds {self.name} {down_after_ms}\n"
                f"sentinel failover-timeout {self.name} {failover_timeout_ms}\n"
            )
            self.sentinel = Background([which("redis-sentinel"), str(conf)])
            wait_for_port(self.port)
            self._wait(lambda: "slaves=1" in self.sentinel_cli("info", "sentinel"), "the Sentinel to see the replica")
        except BaseException:
            self.close()
            raise

    @property
    def _replica(self) -> RedisServer:
        assert self.replica is not None
        return self.replica

    @staticmethod
    def _wait(predicate: object, what: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():  # type: ignore[operator]
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.name}"

    def sentinel_cli(self, *args: str) -> str:
        return subprocess.run(
            [which("redis-cli"), "-p", str(self.port), *args], check=True, capture_output=True, text=True, timeout=10
        ).stdout

    def master_port(self) -> int:
        """The master's port as the Sentinel names it now."""
        reply = self.sentinel_cli("sentinel", "get-master-addr-by-name", self.name).split()
        return int(reply[1])

    def close(self) -> None:
        if self.sentinel is not None:
            self.sentinel.close()
        for server in (self.master, self.replica):
            if server is not None:
                server.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def sentinel_group() -> Iterator[SentinelGroup]:
    """A started :class:`SentinelGroup`, stopped afterwards."""
    group = SentinelGroup()
    try:
        yield group
    finally:
        group.close()


class LoopLag:
    """Measures the longest stretch the event loop spent blocked while the probe ran.

    Each gap between two wake-ups of a task sleeping 5 ms is counted twice: in wall time, and in CPU
    time of the loop's thread. On a shared machine the process is also descheduled (wall time, no
    CPU); code blocking the loop with work (rebuilding a slot table, building a TLS context) burns CPU.
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.wall = 0.0
        self.cpu = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            wall, cpu = time.perf_counter(), time.thread_time()
            await asyncio.sleep(self.interval)
            self.wall = max(self.wall, time.perf_counter() - wall - self.interval)
            self.cpu = max(self.cpu, time.thread_time() - cpu)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
