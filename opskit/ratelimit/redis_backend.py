"""The shared backend: one atomic Lua script per decision, batched per event-loop tick.

Decisions issued by concurrent requests in the same tick of the event loop travel together in one
pipeline (``EVALSHA`` xN, one round trip), so the client's per-call cost is paid once per batch,
not once per request. Every batch is bounded by the timeout; on expiry each waiting decision gets a
:class:`BackendError` and the caller applies the failure policy.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from importlib.resources import files
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.connection import RedisSSLContext, SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from opskit.settings.redis_url import parse_redis_url

from .channel import ReplyError, ScriptChannel, bulk, channel_for, pack
from .cluster import ClusterRoutes, moved_to
from .decision import BackendError, Decision
from .rate import Rate

__all__ = ["SCRIPT", "RedisBackend", "RedisNode", "connect", "redis_backend", "within"]

T = TypeVar("T")

SCRIPT = files(__package__).joinpath("gcra.lua").read_text(encoding="utf-8")
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest()

_Pending = tuple[str, int, Sequence[Rate], "asyncio.Future[Decision]"]
_EVALSHA_HEAD = bulk(b"EVALSHA") + bulk(SCRIPT_SHA.encode()) + bulk(b"1")
_LOAD_SCRIPT = pack(b"SCRIPT", b"LOAD", SCRIPT.encode())
_PREFILLED_CONNECTIONS = 16
_STALL = 0.002  # a timer this late means the event loop was blocked, not idle
_AFTER_STALL = 0.01  # what a write, a loopback round trip and a parse take right after a stall
_GRACE_TURNS = 5  # event-loop turns a task whose reply was read in time needs to return it


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


def within(awaitable: Coroutine[Any, Any, T], timeout: float, background: set[asyncio.Task[Any]]) -> Awaitable[T]:
    """``awaitable``'s result, or :class:`asyncio.TimeoutError` once ``timeout`` has passed: a hard bound.

    Unlike ``asyncio.wait_for``, the caller never waits for the cancelled work to finish: redis-py's
    pool, cancelled while it waits for a connection, first takes its lock back, which held decisions
    for a second against a frozen Redis.

    A stall of the event loop (a GC pause, a busy request) is no time Redis had, so the time counts
    from the work's first step, not from the call, and a deadline the loop itself overran by a stall
    is extended once, by that stall but at most 10 ms. At the deadline the loop gets a few more turns to finish work
    whose reply is already read: after a stall the reply and the timer are due together, and the
    reply that arrived in time must win. The bound is the timeout plus the stalls plus 10 ms.
    """
    loop = asyncio.get_running_loop()
    task = loop.create_task(awaitable)
    started: list[float] = []
    # Runs right after the task's first step (call_soon keeps order): the moment the command is written.
    loop.call_soon(lambda: started.append(loop.time()))
    return _within(task, timeout, started, background)


async def _wait(task: asyncio.Future[Any], seconds: float) -> None:
    """Until ``task`` is done or ``seconds`` have passed (a leaner ``asyncio.wait`` for one task)."""
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    timer = loop.call_later(seconds, wake)
    task.add_done_callback(wake)
    try:
        await waiter
    finally:
        timer.cancel()
        task.remove_done_callback(wake)


async def _within(
    task: asyncio.Future[T], timeout: float, started: list[float], background: set[asyncio.Task[Any]]
) -> T:
    loop = asyncio.get_running_loop()
    try:
        await _wait(task, timeout)
        if not task.done() and started:
            deadline = started[0] + timeout
            if deadline > loop.time():
                await _wait(task, deadline - loop.time())
            late = loop.time() - deadline
            if not task.done() and late > _STALL:
                # The loop was blocked past the deadline, so the work may have been too, just before
                # writing its command: a few milliseconds more let a healthy Redis answer it.
                await _wait(task, min(late, _AFTER_STALL))
        for _ in range(_GRACE_TURNS):
            if task.done():
                break
            await asyncio.sleep(0)
    except asyncio.CancelledError:
        _abandon(task, background)
        raise
    if task.done():
        return task.result()
    _abandon(task, background)
    raise asyncio.TimeoutError


def _abandon(task: asyncio.Future[Any], background: set[asyncio.Task[Any]]) -> None:
    """Cancel ``task`` and let it wind down on its own; its outcome is nobody's to read."""
    task.cancel()
    if isinstance(task, asyncio.Task):
        background.add(task)
        task.add_done_callback(background.discard)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())


def _shared_tls() -> type[SSLConnection]:
    """A TLS connection class whose connections share one TLS context (one class per pool).

    redis-py builds a context per connection, loading the CA store each time: about 100 ms of CPU
    on the event loop for every reconnection after a timeout.
    """

    class SharedContextSSLConnection(SSLConnection):
        shared: RedisSSLContext | None = None

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            cls = type(self)
            if cls.shared is None:
                cls.shared = self.ssl_context
            self.ssl_context = cls.shared

    return SharedContextSSLConnection


def connection_options(timeout: float) -> dict[str, Any]:
    """Socket limits and retries of every redis-py connection opskit makes."""
    # One immediate retry on a broken connection (a pooled socket from before a restart or failover);
    # none on timeouts: the decision's time budget is spent by then.
    retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    # Each decision is bounded by the backend's own timeout; the sockets' limits only catch what runs
    # outside a decision (warm-up, readiness ping), which may take longer than one decision may.
    socket_timeout = max(timeout, 1.0)
    return {"socket_timeout": socket_timeout, "socket_connect_timeout": socket_timeout, "retry": retry}


def server_client(url: str, *, timeout: float, max_connections: int) -> Any:
    """redis-py's client for one server (``redis://``, ``rediss://``, ``unix://``) with a bounded pool."""
    options = connection_options(timeout)
    # Waiting for a free connection counts against the decision's own deadline, which allows for
    # stalls of the event loop; the pool's timer would not.
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=options["socket_timeout"], **options
    )
    if pool.connection_class is SSLConnection:
        pool.connection_class = _shared_tls()
    return aioredis.Redis.from_pool(pool)


def connect(url: str, *, timeout: float, max_connections: int) -> Any:
    """redis-py's client for a single server or a Sentinel-watched master (not for a Cluster).

    ``redis+sentinel://[:password@]host:port[,host:port...]/master[/db]`` asks the Sentinels for the
    master ``master``.
    """
    target = parse_redis_url(url)
    if target.kind == "cluster":
        raise ValueError("a Redis Cluster has no single client: use redis_backend()")
    if target.kind == "single":
        return server_client(url, timeout=timeout, max_connections=max_connections)
    common = connection_options(timeout)
    limits = {k: common[k] for k in ("socket_timeout", "socket_connect_timeout")}
    sentinel = Sentinel(list(target.nodes), sentinel_kwargs=limits, **common)  # type: ignore[no-untyped-call]
    return sentinel.master_for(target.master, password=target.password, db=target.db, max_connections=max_connections)


class RedisNode:
    """One Redis server as decisions reach it: redis-py's client, and opskit's channel for plain URLs."""

    def __init__(self, client: Any, channel: ScriptChannel | None = None, name: str = "") -> None:
        self.client = client
        self.channel = channel
        self.name = name

    async def open_connections(self) -> None:
        """Fill redis-py's pool ahead of the decisions (not needed with a channel, which has one connection).

        A decision that has to open a connection pays for the TCP and TLS handshakes inside its timeout:
        on a busy machine a TLS handshake alone took longer than 50 ms.
        """
        if self.channel is not None:
            return
        pool = self.client.connection_pool
        count = min(getattr(pool, "max_connections", 1), _PREFILLED_CONNECTIONS)
        opened = await asyncio.gather(*(pool.get_connection() for _ in range(count)), return_exceptions=True)
        for connection in opened:
            if not isinstance(connection, BaseException):
                await pool.release(connection)

    async def close(self) -> None:
        """Close the channel, the client and its pool (and a Sentinel pool's Sentinel connections)."""
        if self.channel is not None:
            self.channel.close()
        await self.client.aclose()
        pool = getattr(self.client, "connection_pool", None)
        if pool is not None:
            # A client handed a pool (Sentinel's) does not close it, nor the Sentinel connections.
            await pool.disconnect()
            for sentinel in getattr(getattr(pool, "sentinel_manager", None), "sentinels", ()):
                await sentinel.aclose()


def _server_node(url: str, *, timeout: float, max_connections: int, pipelined: bool, name: str = "") -> RedisNode:
    client = server_client(url, timeout=timeout, max_connections=max_connections)
    channel = channel_for(url, connect_timeout=max(timeout, 1.0)) if pipelined else None
    return RedisNode(client, channel, name)


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
            node = _server_node(url, timeout=timeout, max_connections=max_connections, pipelined=pipelined)
        return RedisBackend(node, timeout=timeout, batch=batch)
    base = urlsplit(target.url)
    credentials = base.netloc.rpartition("@")[0]

    def make_node(address: tuple[str, int]) -> RedisNode:
        host = f"[{address[0]}]" if ":" in address[0] else address[0]
        netloc = f"{credentials}@{host}:{address[1]}" if credentials else f"{host}:{address[1]}"
        node_url = urlunsplit(base._replace(netloc=netloc))
        name = f"{address[0]}:{address[1]}"
        return _server_node(node_url, timeout=timeout, max_connections=max_connections, pipelined=pipelined, name=name)

    async def ask_slots(node: RedisNode) -> Any:
        return await node.client.execute_command("CLUSTER", "SLOTS")

    return RedisBackend(ClusterRoutes(target.nodes, make_node, ask_slots), timeout=timeout, batch=batch)


def _no_script(reply: object) -> bool:
    """Whether a reply says the script is not loaded (redis-py's exception or hiredis's error reply)."""
    return isinstance(reply, NoScriptError) or (isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"))


class RedisBackend:
    """Token buckets in Redis, exact across processes and pods (the server's clock decides).

    ``target`` is one server (a :class:`RedisNode`) or the masters of a Cluster; in a Cluster each
    master answers its keys under its own deadline, so a dead master fails only its own keys.
    """

    shared = True

    def __init__(
        self,
        target: RedisNode | ClusterRoutes[RedisNode],
        *,
        timeout: float = 0.05,
        batch: bool = True,
        on_round_trip: Callable[[float], None] | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.batch = batch
        self._on_round_trip = on_round_trip
        self._pending: list[_Pending] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._args: dict[tuple[tuple[Rate, ...], int], list[Any]] = {}
        self._frames: dict[tuple[tuple[Rate, ...], int], tuple[bytes, bytes]] = {}
        self._warm = False
        self._warm_retry_at = 0.0

    def node_of(self, key: str) -> str:
        """The name of the server that decides ``key`` (empty for a single server or an unknown slot)."""
        target = self.target
        if isinstance(target, RedisNode):
            return target.name
        address = target.owner(key)
        return f"{address[0]}:{address[1]}" if address else ""

    def _script_args(self, rates: Sequence[Rate], cost: int) -> list[Any]:
        key = (tuple(rates), cost)
        args = self._args.get(key)
        if args is None:
            args = [cost]
            for rate in rates:
                args += [f"{rate.interval * 1_000_000:.3f}", rate.burst]
            self._args[key] = args
        return args

    def _frame(self, rates: Sequence[Rate], cost: int) -> tuple[bytes, bytes]:
        """The packed EVALSHA around its key: everything but the key is the same for a policy."""
        key = (tuple(rates), cost)
        frame = self._frames.get(key)
        if frame is None:
            args = [str(arg).encode() for arg in self._script_args(rates, cost)]
            head = b"*%d\r\n" % (4 + len(args)) + _EVALSHA_HEAD
            frame = self._frames[key] = (head, b"".join(map(bulk, args)))
        return frame

    async def decide(self, key: str, rates: Sequence[Rate], cost: int = 1) -> Decision:
        """Take ``cost`` tokens from the bucket ``key``; raises :class:`BackendError` on failure or timeout."""
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        item = (key, cost, rates, future)
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
        await self._carry(pending, future)
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
                replies = await within(self._on_node(target, batch), self.timeout, self._tasks)
            else:
                replies = await self._on_cluster(target, batch)
        except BaseException as exc:
            error = BackendError(error_reason(exc), type(exc).__name__)
            for *_, future in batch:
                if not future.done():
                    future.set_exception(error)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        if self._on_round_trip is not None:
            self._on_round_trip(time.perf_counter() - started)
        for (_, _, rates, future), reply in zip(batch, replies, strict=False):
            if future.done():
                continue
            if isinstance(reply, BaseException):
                future.set_exception(BackendError(error_reason(reply), type(reply).__name__))
            else:
                allowed, index, remaining, retry_us, reset_us = reply
                future.set_result(
                    Decision(
                        outcome="allowed" if allowed else "limited",
                        rate=rates[int(index) - 1],
                        remaining=int(remaining),
                        retry_after=int(retry_us) / 1_000_000,
                        reset=int(reset_us) / 1_000_000,
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

    async def _on_node(self, node: RedisNode, batch: Sequence[_Pending]) -> list[Any]:
        replies = await self._round_trip(node, batch)
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
            key, cost, rates, _ = batch[0]
            try:
                return [
                    await node.client.execute_command("EVALSHA", SCRIPT_SHA, 1, key, *self._script_args(rates, cost))
                ]
            except ResponseError as exc:  # NOSCRIPT, MOVED...: an answer for this decision
                return [exc]
        pipe = node.client.pipeline(transaction=False)
        for key, cost, rates, _ in batch:
            pipe.execute_command("EVALSHA", SCRIPT_SHA, 1, key, *self._script_args(rates, cost))
        return list(await pipe.execute(raise_on_error=False))

    async def _over_channel(self, channel: ScriptChannel, batch: Sequence[_Pending]) -> list[Any]:
        frames = []
        for key, cost, rates, _ in batch:
            head, tail = self._frame(rates, cost)
            frames += [head, bulk(key.encode()), tail]
        return await channel.call(b"".join(frames), len(batch))

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

    async def warm_up(self, timeout: float = 2.0) -> bool:
        """Connect (read a Cluster's slot table) and load the script, allowing more than the per-decision
        timeout: a cold start must not be cut short request after request. True when it worked.

        Runs at startup; without a lifespan, the first decision starts it in the background. In a
        Cluster a master that does not answer is skipped: it loads the script when it answers again.
        """
        self._warm = True
        target = self.target
        try:
            if isinstance(target, RedisNode):
                await within(self._load_script(target), timeout, self._tasks)
                await within(target.open_connections(), timeout, self._tasks)
            elif not await within(target.refresh(timeout), timeout, self._tasks):
                raise RedisConnectionError("no Cluster node answered")
            else:
                masters = target.masters()
                loads = (within(self._load_script(node), timeout, self._tasks) for node in masters)
                await asyncio.gather(*loads, return_exceptions=True)
                opened = (within(node.open_connections(), timeout, self._tasks) for node in masters)
                await asyncio.gather(*opened, return_exceptions=True)
        except Exception:
            self._warm = False  # a batch a second from now tries again
            self._warm_retry_at = time.monotonic() + 1.0
            return False
        return True

    def _start_warm_up(self) -> None:
        task = asyncio.get_running_loop().create_task(self.warm_up())
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
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        target = self.target
        if isinstance(target, RedisNode):
            await target.close()
            return
        await target.close()
        await asyncio.gather(*(node.close() for node in target.nodes.values()), return_exceptions=True)
