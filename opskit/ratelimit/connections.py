"""redis-py clients as decisions need them: bounded sockets, one retry, filled pools, one TLS context."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import RedisSSLContext, SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from opskit.settings.redis_url import parse_redis_url

from .channel import ScriptChannel, channel_for

__all__ = ["RedisNode", "connect", "connection_options", "server_client", "server_node"]

_PREFILLED_CONNECTIONS = 16


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
        held: list[Any] = []

        async def take() -> None:
            held.append(await pool.get_connection())

        try:
            await asyncio.gather(*(take() for _ in range(count)), return_exceptions=True)
        finally:
            # Also when the warm-up is cancelled (the backend closing): every connection taken goes back.
            for connection in held:
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


def server_node(url: str, *, timeout: float, max_connections: int, pipelined: bool, name: str = "") -> RedisNode:
    """One server's node: redis-py's client, and a channel when ``pipelined`` and the URL is plain."""
    client = server_client(url, timeout=timeout, max_connections=max_connections)
    channel = channel_for(url, connect_timeout=max(timeout, 1.0)) if pipelined else None
    return RedisNode(client, channel, name)
