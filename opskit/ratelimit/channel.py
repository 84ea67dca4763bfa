"""A lean, pipelined Redis connection for the decision script (plain ``redis://`` URLs).

Through redis-py, every command pays for packing its arguments, a pool checkout with its locks
and metrics, a timeout context per reply and the response callbacks: more CPU in the app than
the script costs inside Redis. Decisions need none of that. A :class:`ScriptChannel` keeps one
connection, writes each batch of commands as one prepacked buffer the moment it is ready
(batches are pipelined back to back, never waiting for each other), and hands replies to their
batch in order as hiredis parses them.

Anything it does not speak (TLS, Sentinel, Cluster, Unix sockets, URL options) stays with
redis-py: :func:`channel_for` returns ``None`` for those URLs.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = ["ReplyError", "ScriptChannel", "bulk", "channel_for", "pack"]

ReplyError = hiredis.ReplyError


def bulk(part: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(part), part)


def pack(*parts: bytes) -> bytes:
    """One command in RESP: ``*<n>`` then each part as a bulk string."""
    return b"*%d\r\n" % len(parts) + b"".join(map(bulk, parts))


class _Batch:
    __slots__ = ("future", "remaining", "replies")

    def __init__(self, future: asyncio.Future[list[Any]], count: int) -> None:
        self.future = future
        self.remaining = count
        self.replies: list[Any] = []


class _Protocol(asyncio.Protocol):
    """Matches parsed replies to the batches waiting for them, oldest first."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: deque[_Batch] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        waiting = self.waiting
        try:
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                if not waiting:
                    raise hiredis.ProtocolError("a reply nobody asked for")
                batch = waiting[0]
                batch.replies.append(reply)
                batch.remaining -= 1
                if not batch.remaining:
                    waiting.popleft()
                    if not batch.future.done():
                        batch.future.set_result(batch.replies)
        except hiredis.ProtocolError:
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        error = RedisConnectionError(f"connection to Redis lost: {exc or 'closed'}")
        while self.waiting:
            future = self.waiting.popleft().future
            if not future.done():
                future.set_exception(error)
                future.exception()  # a batch whose caller gave up is nobody's to read

    def abort(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.abort()


class ScriptChannel:
    """One pipelined connection to a single Redis server; reconnects on the next call after a loss."""

    def __init__(
        self,
        host: str,
        port: int = 6379,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        connect_timeout: float = 1.0,
    ) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        handshake: list[bytes] = []
        if password is not None:
            auth = (username.encode(), password.encode()) if username else (password.encode(),)
            handshake.append(pack(b"AUTH", *auth))
        if db:
            handshake.append(pack(b"SELECT", str(db).encode()))
        self._handshake = b"".join(handshake)
        self._handshake_count = len(handshake)
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    def submit(self, payload: bytes, count: int) -> tuple[asyncio.Future[list[Any]], Callable[[], None]] | None:
        """Write ``count`` prepacked commands on the open connection now: the future of their replies
        and what drops that connection; ``None`` when no connection is open (:meth:`call` opens one).

        No coroutine and no task: the caller bounds the wait itself (:func:`~.deadline.expire`) and
        drops the connection when it stops waiting, as :meth:`call` does.
        """
        protocol = self._protocol
        if protocol is None or protocol.lost:
            return None
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        protocol.waiting.append(_Batch(future, count))
        protocol.transport.write(payload)  # type: ignore[union-attr]
        return future, protocol.abort

    async def call(self, payload: bytes, count: int) -> list[Any]:
        """Send ``count`` prepacked commands and return their replies (error replies as :class:`ReplyError`).

        A connection found broken (Redis restarted, a failover) is replaced and the batch sent once
        more, as redis-py does. A caller that stops waiting (timeout, cancellation) drops the
        connection: its replies may still arrive, and a Redis that slow is better met with a fresh
        connection than a queue.
        """
        protocol = self._protocol
        fresh = protocol is None or protocol.lost
        while True:
            if protocol is None or protocol.lost:
                protocol = await self._connect()
            future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            protocol.waiting.append(_Batch(future, count))
            protocol.transport.write(payload)  # type: ignore[union-attr]
            try:
                return await future
            except RedisConnectionError:
                if fresh:
                    raise
                fresh = True
                protocol = None
            except asyncio.CancelledError:
                protocol.abort()
                raise

    async def _connect(self) -> _Protocol:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:  # concurrent first calls share one connection attempt
            current = self._protocol
            if current is not None and not current.lost:
                return current
            loop = asyncio.get_running_loop()
            protocol: _Protocol
            try:
                _, protocol = await asyncio.wait_for(
                    loop.create_connection(_Protocol, self.host, self.port), self.connect_timeout
                )
            except (OSError, asyncio.TimeoutError) as exc:
                raise RedisConnectionError(f"cannot connect to Redis at {self.host}:{self.port}: {exc!r}") from exc
            if self._handshake_count:
                future: asyncio.Future[list[Any]] = loop.create_future()
                protocol.waiting.append(_Batch(future, self._handshake_count))
                protocol.transport.write(self._handshake)  # type: ignore[union-attr]
                try:
                    replies = await asyncio.wait_for(future, self.connect_timeout)
                except BaseException:
                    protocol.abort()
                    raise
                failed = [reply for reply in replies if isinstance(reply, ReplyError)]
                if failed:
                    protocol.abort()
                    raise RedisConnectionError(f"Redis refused the connection's setup: {failed[0]}")
            self._protocol = protocol
            return protocol

    def close(self) -> None:
        """Drop the connection; batches still waiting fail as connection errors."""
        if self._protocol is not None:
            self._protocol.abort()
            self._protocol = None


def channel_for(url: str, *, connect_timeout: float = 1.0) -> ScriptChannel | None:
    """A channel for a plain ``redis://[[user]:password@]host[:port][/db]`` URL, else ``None``."""
    parts = urlsplit(url)
    if parts.scheme != "redis" or parts.query or parts.fragment or not parts.hostname:
        return None
    path = parts.path.strip("/")
    if path and not path.isdigit():
        return None
    return ScriptChannel(
        parts.hostname,
        parts.port or 6379,
        db=int(path or 0),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        connect_timeout=connect_timeout,
    )
