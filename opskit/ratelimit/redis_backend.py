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
from collections.abc import Callable, Sequence
from importlib.resources import files
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .channel import ReplyError, ScriptChannel, bulk, channel_for, pack
from .decision import BackendError, Decision
from .rate import Rate

__all__ = ["SCRIPT", "RedisBackend", "connect", "redis_backend"]

SCRIPT = files(__package__).joinpath("gcra.lua").read_text(encoding="utf-8")
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest()

_Pending = tuple[str, int, Sequence[Rate], "asyncio.Future[Decision]"]
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


def connect(url: str, *, timeout: float, max_connections: int) -> Any:
    """An async Redis client for ``url``: plain, TLS, Sentinel or Cluster; a bounded pool, one retry.

    ``redis+sentinel://[:password@]host:port[,host:port...]/master[/db]`` asks the Sentinels for the
    master ``master``; ``redis+cluster://`` (or ``rediss+cluster://``) speaks the Cluster protocol.
    """
    # One immediate retry on a broken connection (a pooled socket from before a restart or failover);
    # none on timeouts: the decision's time budget is spent by then.
    retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    # Each decision is bounded by the backend's own timeout; the sockets' limits only catch what runs
    # outside a decision (warm-up, readiness ping), which may take longer than one decision may.
    socket_timeout = max(timeout, 1.0)
    common: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "retry": retry,
    }
    if url.startswith(("redis+cluster://", "rediss+cluster://")):
        plain = url.replace("+cluster", "", 1)
        return RedisCluster.from_url(plain, max_connections=max_connections, **common)
    if url.startswith("redis+sentinel://"):
        parts = urlsplit(url)
        hosts = parts.netloc.rpartition("@")[2]
        nodes = [(h.rpartition(":")[0] or h, int(h.rpartition(":")[2] or 26379)) for h in hosts.split(",")]
        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise ValueError("redis+sentinel:// URL needs the master name: redis+sentinel://host:26379/mymaster")
        password = unquote(parts.password) if parts.password else None
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            nodes, sentinel_kwargs={"socket_timeout": socket_timeout}, **common
        )
        db = int(path[1]) if len(path) > 1 else 0
        return sentinel.master_for(path[0], password=password, db=db, max_connections=max_connections)
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=timeout, **common)
    return aioredis.Redis.from_pool(pool)


def redis_backend(
    url: str, *, timeout: float, max_connections: int, batch: bool = True, pipelined: bool = True
) -> RedisBackend:
    """The backend for ``url``: decisions over a :class:`ScriptChannel` when ``pipelined`` and the URL
    is plain ``redis://``, otherwise (and always for pings) through redis-py's client."""
    client = connect(url, timeout=timeout, max_connections=max_connections)
    channel = channel_for(url, connect_timeout=max(timeout, 1.0)) if pipelined else None
    return RedisBackend(client, timeout=timeout, batch=batch, channel=channel)


def _no_script(reply: object) -> bool:
    """Whether a reply says the script is not loaded (redis-py's exception or hiredis's error reply)."""
    return isinstance(reply, NoScriptError) or (isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"))


class RedisBackend:
    """Token buckets in Redis, exact across processes and pods (the server's clock decides)."""

    shared = True

    def __init__(
        self,
        client: Any,
        *,
        timeout: float = 0.05,
        batch: bool = True,
        on_round_trip: Callable[[float], None] | None = None,
        channel: ScriptChannel | None = None,
    ) -> None:
        self.client = client
        self.timeout = timeout
        self.batch = batch
        self.channel = channel
        self._on_round_trip = on_round_trip
        self._pending: list[_Pending] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._args: dict[tuple[tuple[Rate, ...], int], list[Any]] = {}
        self._frames: dict[tuple[tuple[Rate, ...], int], tuple[bytes, bytes]] = {}
        self._warm = False
        self._warm_retry_at = 0.0

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
            replies = await asyncio.wait_for(self._execute(batch), self.timeout)
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

    async def _execute(self, batch: Sequence[_Pending]) -> list[Any]:
        replies = await self._round_trip(batch)
        missing = [i for i, reply in enumerate(replies) if _no_script(reply)]
        if missing:
            # SCRIPT FLUSH, a restart or a failover emptied the script cache: load it and redo those.
            await self.load_script()
            again = await self._round_trip([batch[i] for i in missing])
            for i, reply in zip(missing, again, strict=False):
                replies[i] = reply
        return replies

    async def _round_trip(self, batch: Sequence[_Pending]) -> list[Any]:
        """One reply per decision, error replies in their place."""
        if self.channel is not None:
            return await self._over_channel(self.channel, batch)
        if len(batch) == 1:
            key, cost, rates, _ = batch[0]
            try:
                return [
                    await self.client.execute_command("EVALSHA", SCRIPT_SHA, 1, key, *self._script_args(rates, cost))
                ]
            except NoScriptError as exc:
                return [exc]
        return await self._pipeline(batch)

    async def _pipeline(self, batch: Sequence[_Pending]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for key, cost, rates, _ in batch:
            pipe.execute_command("EVALSHA", SCRIPT_SHA, 1, key, *self._script_args(rates, cost))
        return list(await pipe.execute(raise_on_error=False))

    async def _over_channel(self, channel: ScriptChannel, batch: Sequence[_Pending]) -> list[Any]:
        frames = []
        for key, cost, rates, _ in batch:
            head, tail = self._frame(rates, cost)
            frames += [head, bulk(key.encode()), tail]
        return await channel.call(b"".join(frames), len(batch))

    async def load_script(self) -> None:
        """Load the script into Redis (every primary of a Cluster)."""
        if self.channel is not None:
            (reply,) = await self.channel.call(_LOAD_SCRIPT, 1)
            if isinstance(reply, ReplyError):
                raise ResponseError(str(reply))
            return
        await self.client.script_load(SCRIPT)

    async def warm_up(self, timeout: float = 2.0) -> bool:
        """Connect (discover a Cluster's slots) and load the script, allowing more than the per-decision
        timeout: a cold start must not be cut short request after request. True when it worked.

        Runs at startup; without a lifespan, the first decision starts it in the background.
        """
        self._warm = True
        try:
            if isinstance(self.client, RedisCluster):
                await asyncio.wait_for(self.client.initialize(), timeout)
            await asyncio.wait_for(self.load_script(), timeout)
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
        """True when Redis answers within 20 decision timeouts (the readiness check)."""
        try:
            return bool(await asyncio.wait_for(self.client.ping(), self.timeout * 20))
        except Exception:
            return False

    async def close(self) -> None:
        """Stop batches and warm-ups in flight, then close the client and its pool."""
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.channel is not None:
            self.channel.close()
        await self.client.aclose()
        pool = getattr(self.client, "connection_pool", None)
        if pool is not None:
            # A client handed a pool (Sentinel's) does not close it, nor the Sentinel connections.
            await pool.disconnect()
            for sentinel in getattr(getattr(pool, "sentinel_manager", None), "sentinels", ()):
                await sentinel.aclose()
