"""The shared backend: one atomic Lua script per decision, batched per event-loop tick.

Decisions issued by concurrent requests in the same tick of the event loop travel together in one
pipeline (``EVALSHA`` xN, one round trip), so the client's per-call cost is paid once per batch,
not once per request. Every batch is bounded by the timeout (:func:`~.deadline.within`); on expiry
each waiting decision gets a :class:`BackendError` and the caller applies the failure policy. In a
Cluster each master answers its share of a batch on its own (:mod:`.cluster`).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Sequence
from importlib.resources import files
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from opskit.settings.redis_url import parse_redis_url

from .channel import ReplyError, ScriptChannel, bulk, pack
from .cluster import ClusterRoutes, moved_to
from .connections import RedisNode, connect, server_node
from .deadline import Expiry, within
from .decision import BackendError, Decision
from .rate import Rate

__all__ = ["SCRIPT", "RedisBackend", "connect", "redis_backend"]

SCRIPT = files(__package__).joinpath("gcra.lua").read_text(encoding="utf-8")
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest()

_Pending = tuple[str, int, Sequence[Rate], "asyncio.Future[Decision]", bool]
_EVALSHA_HEAD = bulk(b"EVALSHA") + bulk(SCRIPT_SHA.encode()) + bulk(b"1")
_LOAD_SCRIPT = pack(b"SCRIPT", b"LOAD", SCRIPT.encode())


def error_reason(exc: BaseException) -> str:
    """A bounded label for a Redis failure (a metric label, never the message)."""
    if isinstance(exc, BackendError):
        return exc.reason
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"  # the request that carried the batch went away; Redis may be fine
    if isinstance(exc, (asyncio.TimeoutError, RedisTimeoutError)):
        return "timeout"
    if isinstance(exc, (RedisConnectionError, OSError)):
        return "connection"
    if isinstance(exc, (ResponseError, ReplyError)):
        return "response"
    if isinstance(exc, RedisError):
        return "redis"
    return "other"


def redis_backend(
    url: str, *, timeout: float, max_connections: int, batch: bool = True, pipelined: bool = True
) -> RedisBackend:
    """The backend for ``url``: decisions over a :class:`ScriptChannel` when ``pipelined`` and the URL
    is plain ``redis://`` (each Cluster master's too), otherwise (and always for pings) through
    redis-py's client."""
    target = parse_redis_url(url)
    if target.kind != "cluster":
        if target.kind == "sentinel":
            node = RedisNode(connect(url, timeout=timeout, max_connections=max_connections))
        else:
            node = server_node(url, timeout=timeout, max_connections=max_connections, pipelined=pipelined)
        return RedisBackend(node, timeout=timeout, batch=batch)
    base = urlsplit(target.url)
    credentials = base.netloc.rpartition("@")[0]

    def make_node(address: tuple[str, int]) -> RedisNode:
        host = f"[{address[0]}]" if ":" in address[0] else address[0]
        netloc = f"{credentials}@{host}:{address[1]}" if credentials else f"{host}:{address[1]}"
        node_url = urlunsplit(base._replace(netloc=netloc))
        name = f"{address[0]}:{address[1]}"
        return server_node(node_url, timeout=timeout, max_connections=max_connections, pipelined=pipelined, name=name)

    async def ask_slots(node: RedisNode) -> Any:
        return await node.client.execute_command("CLUSTER", "SLOTS")

    return RedisBackend(ClusterRoutes(target.nodes, make_node, ask_slots), timeout=timeout, batch=batch)


def _no_script(reply: object) -> bool:
    """Whether a reply says the script is not loaded (redis-py's exception or hiredis's error reply)."""
    return isinstance(reply, NoScriptError) or (isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"))


class RedisBackend:
    """Token buckets in Redis, exact across processes and pods (the server's clock decides).

    ``target`` is one server (a :class:`RedisNode`, or a redis-py client, which becomes one) or the
    masters of a Cluster; in a Cluster each master answers its keys under its own deadline, so a dead
    master fails only its own keys.
    """

    shared = True

    def __init__(
        self,
        target: RedisNode | ClusterRoutes[RedisNode] | Any,
        *,
        timeout: float = 0.05,
        batch: bool = True,
        on_round_trip: Callable[[float], None] | None = None,
    ) -> None:
        self.target: RedisNode | ClusterRoutes[RedisNode] = (
            target if isinstance(target, (RedisNode, ClusterRoutes)) else RedisNode(target)
        )
        self.timeout = timeout
        self.batch = batch
        self._on_round_trip = on_round_trip
        self._pending: list[_Pending] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._args: dict[tuple[tuple[Rate, ...], int, bool], list[Any]] = {}
        self._frames: dict[tuple[tuple[Rate, ...], int, bool], tuple[bytes, bytes]] = {}
        self._warm = False
        self._warm_retry_at = 0.0
        self._expiry = Expiry(timeout)

    def node_of(self, key: str) -> str:
        """The name of the server that decides ``key`` (empty for a single server or an unknown slot)."""
        target = self.target
        if isinstance(target, RedisNode):
            return target.name
        address = target.owner(key)
        return f"{address[0]}:{address[1]}" if address else ""

    def _script_args(self, rates: Sequence[Rate], cost: int, force: bool = False) -> list[Any]:
        key = (tuple(rates), cost, force)
        args = self._args.get(key)
        if args is None:
            args = [cost, 1 if force else 0]
            for rate in rates:
                args += [f"{rate.interval * 1_000_000:.3f}", rate.burst]
            self._args[key] = args
        return args

    def _frame(self, rates: Sequence[Rate], cost: int, force: bool = False) -> tuple[bytes, bytes]:
        """The packed EVALSHA around its key: everything but the key is the same for a policy."""
        key = (tuple(rates), cost, force)
        frame = self._frames.get(key)
        if frame is None:
            args = [str(arg).encode() for arg in self._script_args(rates, cost, force)]
            head = b"*%d\r\n" % (4 + len(args)) + _EVALSHA_HEAD
            frame = self._frames[key] = (head, b"".join(map(bulk, args)))
        return frame

    async def decide(self, key: str, rates: Sequence[Rate], cost: int = 1, *, force: bool = False) -> Decision:
        """Take ``cost`` tokens from the bucket ``key`` (always, with ``force``: see :func:`~.memory.gcra`);
        raises :class:`BackendError` on failure or timeout."""
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        item = (key, cost, rates, future, force)
        if not self.batch:
            await self._carry([item], future)
            return future.result()
        pending = self._pending
        pending.append(item)
        if len(pending) > 1:
            return await future  # a leader sends it with its own
        # The first decision of this tick leads: it yields once so that the decisions of requests
        # running in the same tick join it, then sends them all in one pipeline.
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            pending.remove(item)
            if pending and self._pending is pending:
                asyncio.get_running_loop().call_soon(self._flush)  # the others still need a sender
            raise
        self._pending = []
        try:  # what _carry does, inlined: one coroutine less per batch
            await self._send(pending)
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                future.exception()  # nobody will read it: mark it read, no "never retrieved" noise
            raise
        return future.result()

    async def _carry(self, batch: list[_Pending], own: asyncio.Future[Decision]) -> None:
        try:
            await self._send(batch)
        except asyncio.CancelledError:
            if own.done() and not own.cancelled():
                own.exception()  # nobody will read it: mark it read, no "never retrieved" noise
            raise

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        if not self._warm and time.monotonic() >= self._warm_retry_at:
            self._start_warm_up()
        started = time.perf_counter()
        try:
            target = self.target
            if isinstance(target, RedisNode):
                written = None if target.channel is None else target.channel.submit(self._payload(batch), len(batch))
                if written is not None:
                    replies = await self._on_open_channel(target, batch, *written)
                else:
                    replies = await within(self._on_node(target, batch), self.timeout, self._tasks)
            else:
                replies = await self._on_cluster(target, batch)
        except BaseException as exc:
            error = BackendError(error_reason(exc), type(exc).__name__)
            for _, _, _, future, _ in batch:
                if not future.done():
                    future.set_exception(error)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        if self._on_round_trip is not None:
            self._on_round_trip(time.perf_counter() - started)
        for (_, _, rates, future, _), reply in zip(batch, replies, strict=False):
            if future.done():
                continue
            if isinstance(reply, BaseException):
                future.set_exception(BackendError(error_reason(reply), type(reply).__name__))
            else:
                allowed, index, remaining, retry_us, reset_us = reply
                # Positional (outcome, rate, remaining, retry_after, reset): keywords cost more per decision.
                future.set_result(
                    Decision(
                        "allowed" if allowed else "limited",
                        rates[int(index) - 1],
                        int(remaining),
                        int(retry_us) / 1_000_000,
                        int(reset_us) / 1_000_000,
                    )
                )

    async def _on_cluster(self, routes: ClusterRoutes[RedisNode], batch: Sequence[_Pending]) -> list[Any]:
        """Each master's share of ``batch`` at once, each under the timeout; a failing master's keys get its error."""
        if not routes.known:
            routes.refresh_soon(self.timeout * 20)
            return [RedisConnectionError("the Cluster's slot table is not known yet")] * len(batch)
        shares: dict[tuple[str, int] | None, list[int]] = {}
        for i, item in enumerate(batch):
            shares.setdefault(routes.owner(item[0]), []).append(i)
        replies: list[Any] = [None] * len(batch)
        deadline = time.monotonic() + self.timeout

        async def answer(address: tuple[str, int] | None, indexes: list[int], hops: int = 1) -> None:
            if address is None:
                got: list[Any] = [RedisConnectionError("no master serves this slot")] * len(indexes)
            else:
                share = [batch[i] for i in indexes]
                try:
                    remaining = max(deadline - time.monotonic(), 0.0)
                    got = await within(self._on_node(routes.node(address), share), remaining, self._tasks)
                except Exception as exc:  # this master's keys fail; the others' do not
                    got = [exc] * len(indexes)
            moved: dict[tuple[str, int], list[int]] = {}
            for i, reply in zip(indexes, got, strict=False):
                replies[i] = reply
                if isinstance(reply, Exception):
                    routes.refresh_soon(self.timeout * 20)  # a failover or a resharding may have moved slots
                    to = moved_to(reply)
                    if to is not None and hops:
                        moved.setdefault(to, []).append(i)
            await asyncio.gather(*(answer(to, again, hops - 1) for to, again in moved.items()))

        await asyncio.gather(*(answer(address, indexes) for address, indexes in shares.items()))
        return replies

    async def _on_open_channel(
        self,
        node: RedisNode,
        batch: Sequence[_Pending],
        future: asyncio.Future[list[Any]],
        drop: Callable[[], None],
    ) -> list[Any]:
        """The replies of a batch already written on the node's open channel, under the timeout.

        The common case, so no task of its own (:func:`within` needs one per batch) and no timer per
        batch: one :class:`~.deadline.Expiry` bounds every batch's wait. A connection that broke
        under the batch, or a reply saying the script is gone, goes the general way
        (:meth:`_on_node`) in what is left of the timeout.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        self._expiry.add(future)
        try:
            replies = await future
        except RedisConnectionError:
            replies = None  # Redis restarted, or a failover: a fresh connection, the batch sent again
        except BaseException:
            drop()  # timed out or cancelled: its replies may still come; a fresh connection is better
            raise
        if replies is not None and ReplyError not in map(type, replies):  # no error reply, so no NOSCRIPT
            return replies
        left = max(started + self.timeout - loop.time(), 0.0)
        if replies is None:
            return await within(self._on_node(node, batch), left, self._tasks)
        return await within(self._missing_scripts(node, batch, replies), left, self._tasks)

    async def _on_node(self, node: RedisNode, batch: Sequence[_Pending]) -> list[Any]:
        return await self._missing_scripts(node, batch, await self._round_trip(node, batch))

    async def _missing_scripts(self, node: RedisNode, batch: Sequence[_Pending], replies: list[Any]) -> list[Any]:
        missing = [i for i, reply in enumerate(replies) if _no_script(reply)]
        if missing:
            # SCRIPT FLUSH, a restart or a failover emptied the script cache: load it and redo those.
            await self._load_script(node)
            again = await self._round_trip(node, [batch[i] for i in missing])
            for i, reply in zip(missing, again, strict=False):
                replies[i] = reply
        return replies

    async def _round_trip(self, node: RedisNode, batch: Sequence[_Pending]) -> list[Any]:
        """One reply per decision, error replies in their place."""
        if node.channel is not None:
            return await self._over_channel(node.channel, batch)
        if len(batch) == 1:
            key, cost, rates, _, force = batch[0]
            try:
                return [
                    await node.client.execute_command(
                        "EVALSHA", SCRIPT_SHA, 1, key, *self._script_args(rates, cost, force)
                    )
                ]
            except ResponseError as exc:  # NOSCRIPT, MOVED...: an answer for this decision
                return [exc]
        pipe = node.client.pipeline(transaction=False)
        for key, cost, rates, _, force in batch:
            pipe.execute_command("EVALSHA", SCRIPT_SHA, 1, key, *self._script_args(rates, cost, force))
        return list(await pipe.execute(raise_on_error=False))

    def _payload(self, batch: Sequence[_Pending]) -> bytes:
        frames: list[bytes] = []
        last: tuple[Any, int, bool] | None = None
        head = tail = b""
        for key, cost, rates, _, force in batch:
            # A batch's decisions mostly share one policy: its frame is looked up once, not per decision.
            if last is None or rates is not last[0] or cost != last[1] or force is not last[2]:
                head, tail = self._frame(rates, cost, force)
                last = (rates, cost, force)
            raw = key.encode()
            frames += [head, b"$%d\r\n%s\r\n" % (len(raw), raw), tail]  # bulk(raw), inlined
        return b"".join(frames)

    async def _over_channel(self, channel: ScriptChannel, batch: Sequence[_Pending]) -> list[Any]:
        return await channel.call(self._payload(batch), len(batch))

    async def _load_script(self, node: RedisNode) -> None:
        if node.channel is not None:
            (reply,) = await node.channel.call(_LOAD_SCRIPT, 1)
            if isinstance(reply, ReplyError):
                raise ResponseError(str(reply))
            return
        await node.client.script_load(SCRIPT)

    async def load_script(self) -> None:
        """Load the script into Redis (every master of a Cluster)."""
        target = self.target
        if isinstance(target, RedisNode):
            await self._load_script(target)
        else:
            await asyncio.gather(*(self._load_script(node) for node in target.masters()))

    async def warm_up(self, timeout: float = 2.0, *, fill_pools: bool = True) -> bool:
        """Connect (read a Cluster's slot table) and load the script, allowing more than the per-decision
        timeout: a cold start must not be cut short request after request. True when it worked.

        Runs at startup, where it also opens redis-py's pooled connections ahead of the decisions
        (``fill_pools``); without a lifespan the first decision starts it in the background, and the
        pools grow with use instead: an app that never shuts down leaves no idle sockets behind. In a
        Cluster a master that does not answer is skipped: it loads the script when it answers again.
        """
        self._warm = True
        target = self.target
        try:
            if isinstance(target, RedisNode):
                await within(self._load_script(target), timeout, self._tasks)
                if fill_pools:
                    await within(target.open_connections(), timeout, self._tasks)
            elif not await within(target.refresh(timeout), timeout, self._tasks):
                raise RedisConnectionError("no Cluster node answered")
            else:
                masters = target.masters()
                loads = (within(self._load_script(node), timeout, self._tasks) for node in masters)
                await asyncio.gather(*loads, return_exceptions=True)
                if fill_pools:
                    opened = (within(node.open_connections(), timeout, self._tasks) for node in masters)
                    await asyncio.gather(*opened, return_exceptions=True)
        except Exception:
            self._warm = False  # a batch a second from now tries again
            self._warm_retry_at = time.monotonic() + 1.0
            return False
        return True

    def _start_warm_up(self) -> None:
        task = asyncio.get_running_loop().create_task(self.warm_up(fill_pools=False))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def ping(self) -> bool:
        """True when Redis (every master of a Cluster) answers within 20 decision timeouts (the readiness check)."""
        target = self.target
        nodes = [target] if isinstance(target, RedisNode) else target.masters()
        try:
            answers = [within(node.client.ping(), self.timeout * 20, self._tasks) for node in nodes]
            return bool(nodes) and all(await asyncio.gather(*answers))
        except Exception:
            return False

    async def close(self) -> None:
        """Stop batches and warm-ups in flight, then close every client, channel and pool."""
        while self._tasks:  # a cancelled task may hand work it abandons to the set: until none is left
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks.difference_update(tasks)
        target = self.target
        if isinstance(target, RedisNode):
            await target.close()
            return
        await target.close()
        await asyncio.gather(*(node.close() for node in target.nodes.values()), return_exceptions=True)
