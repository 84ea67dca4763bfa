"""Redis Cluster routing for decisions: each key to the master of its slot, each master on its own.

redis-py's cluster pipeline fails a whole batch when one master is unreachable, retries it after
sleeping 250 ms, and rebuilds its table of 16,384 slots in Python after every connection error:
one dead master then failed every key, held a batch far past its timeout and blocked the event
loop for 50-100 ms again and again. Here a key's master is found by bisecting the few slot ranges
``CLUSTER SLOTS`` lists, each master answers its own share of a batch under its own deadline, and a
dead master fails only the keys of the slots it serves. The table is refreshed in the background,
at most once a second, when a master fails or answers ``MOVED`` (which the decision follows at once).
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Generic, TypeVar

from redis.crc import key_slot
from redis.exceptions import MovedError

__all__ = ["ClusterRoutes", "moved_to", "parse_cluster_slots"]

Node = TypeVar("Node")
Address = tuple[str, int]

REFRESH_INTERVAL = 1.0


def parse_cluster_slots(reply: Iterable[Any], asked: Address) -> list[tuple[int, int, Address]]:
    """``(first slot, last slot, master address)`` from a ``CLUSTER SLOTS`` reply (an empty host is ``asked``'s)."""
    ranges = []
    for entry in reply:
        host = entry[2][0]
        host = host.decode() if isinstance(host, bytes) else str(host)
        ranges.append((int(entry[0]), int(entry[1]), (host or asked[0], int(entry[2][1]))))
    return sorted(ranges)


def moved_to(reply: object) -> Address | None:
    """The address a ``MOVED <slot> <host>:<port>`` error reply names, else ``None``."""
    if isinstance(reply, MovedError):
        words = ["MOVED", *str(reply).split()]  # redis-py drops the error code from the message
    elif isinstance(reply, Exception):
        words = str(reply).split()
    else:
        return None
    if len(words) != 3 or words[0] != "MOVED":
        return None
    host, _, port = words[2].rpartition(":")
    return (host, int(port)) if port.isdigit() else None


class ClusterRoutes(Generic[Node]):
    """Which master serves each slot, and one ``Node`` (made by ``make_node``) per master address."""

    def __init__(
        self,
        bootstrap: Iterable[Address],
        make_node: Callable[[Address], Node],
        ask_slots: Callable[[Node], Awaitable[Any]],
    ) -> None:
        self._bootstrap = list(bootstrap)
        self._make_node = make_node
        self._ask_slots = ask_slots
        self.nodes: dict[Address, Node] = {}
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._owners: list[Address] = []
        self._refreshing: asyncio.Task[bool] | None = None
        self._refreshed_at = -REFRESH_INTERVAL

    @property
    def known(self) -> bool:
        """True once a slot table has been read."""
        return bool(self._owners)

    def node(self, address: Address) -> Node:
        """The node of ``address``, made on first use."""
        node = self.nodes.get(address)
        if node is None:
            node = self.nodes[address] = self._make_node(address)
        return node

    def masters(self) -> list[Node]:
        """The node of every master in the slot table."""
        return [self.node(address) for address in dict.fromkeys(self._owners)]

    def owner(self, key: str) -> Address | None:
        """The address of the master serving ``key``'s slot (``None``: no table yet, or an uncovered slot)."""
        slot = key_slot(key.encode())
        i = bisect.bisect_right(self._starts, slot) - 1
        if i < 0 or slot > self._ends[i]:
            return None
        return self._owners[i]

    async def refresh(self, timeout: float) -> bool:
        """Read the slot table from the first node that answers within ``timeout``; True when one did."""
        self._refreshed_at = time.monotonic()
        candidates = list(dict.fromkeys([*self._owners, *self._bootstrap]))
        for address in candidates:
            try:
                reply = await asyncio.wait_for(self._ask_slots(self.node(address)), timeout)
            except Exception:  # a dead or frozen node: ask the next
                continue
            ranges = parse_cluster_slots(reply, address)
            if ranges:
                self._starts = [r[0] for r in ranges]
                self._ends = [r[1] for r in ranges]
                self._owners = [r[2] for r in ranges]
                return True
        return False

    def refresh_soon(self, timeout: float) -> None:
        """Refresh the table in the background: now, or a second after the last refresh; one at a time."""
        if self._refreshing is not None and not self._refreshing.done():
            return
        delay = self._refreshed_at + REFRESH_INTERVAL - time.monotonic()
        self._refreshing = asyncio.get_running_loop().create_task(self._refresh_after(delay, timeout))

    async def _refresh_after(self, delay: float, timeout: float) -> bool:
        if delay > 0:
            await asyncio.sleep(delay)
        return await self.refresh(timeout)

    async def close(self) -> None:
        """Stop a refresh in flight."""
        if self._refreshing is not None and not self._refreshing.done():
            self._refreshing.cancel()
            await asyncio.gather(self._refreshing, return_exceptions=True)
