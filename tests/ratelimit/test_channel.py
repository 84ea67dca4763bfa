"""The pipelined decision connection against a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from opskit.ratelimit.channel import ReplyError, ScriptChannel, channel_for, pack
from tests.servers import RedisServer


@pytest.fixture
def locked_redis() -> Iterator[RedisServer]:
    server = RedisServer("--requirepass", "s3cret")
    try:
        yield server
    finally:
        server.close()


def run_calls(channel: ScriptChannel, *calls: tuple[bytes, int]) -> list[list[object]]:
    async def scenario() -> list[list[object]]:
        try:
            return list(await asyncio.gather(*(channel.call(payload, n) for payload, n in calls)))
        finally:
            channel.close()

    return asyncio.run(scenario())


class TestUrls:
    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            ("redis://cache:6380/2", ("cache", 6380)),
            ("redis://:pw@cache", ("cache", 6379)),
            ("redis://user:p%40ss@10.0.0.1:7000/0", ("10.0.0.1", 7000)),
        ],
    )
    def test_plain_urls_get_a_channel(self, url: str, expected: tuple[str, int]) -> None:
        """Host and port come from plain ``redis://`` URLs (the database is checked against a server below)."""
        channel = channel_for(url)
        assert channel is not None
        assert (channel.host, channel.port) == expected

    @pytest.mark.parametrize(
        "url",
        [
            "rediss://cache:6380",
            "redis+sentinel://s1:26379/mymaster",
            "redis+cluster://cache:7000",
            "unix:///run/redis.sock",
            "redis://cache:6379/0?socket_keepalive=true",
            "redis://cache/not-a-db",
        ],
    )
    def test_other_urls_stay_with_redis_py(self, url: str) -> None:
        """TLS, Sentinel, Cluster, sockets and URL options are redis-py's job."""
        assert channel_for(url) is None


class TestCalls:
    def test_pipelined_batches_get_their_own_replies_in_order(self, redis: RedisServer) -> None:
        """200 concurrent batches of 3 INCRs each read back exactly their own counters."""
        channel = channel_for(redis.url)
        assert channel is not None
        calls = [
            (b"".join(pack(b"INCRBY", f"k{i}".encode(), str(i).encode()) for _ in range(3)), 3) for i in range(200)
        ]
        replies = run_calls(channel, *calls)
        assert replies == [[i, 2 * i, 3 * i] for i in range(200)]

    def test_error_replies_are_values_not_exceptions(self, redis: RedisServer) -> None:
        """An error reply comes back in its place; the replies around it are unaffected."""
        channel = channel_for(redis.url)
        assert channel is not None
        payload = pack(b"SET", b"a", b"1") + pack(b"NOSUCHCOMMAND") + pack(b"GET", b"a")
        ((ok, error, value),) = run_calls(channel, (payload, 3))
        assert ok == b"OK" and value == b"1"
        assert isinstance(error, ReplyError)

    def test_database_is_selected(self, redis: RedisServer) -> None:
        """``/3`` in the URL selects database 3 before the first command."""
        channel = channel_for(redis.url.rsplit("/", 1)[0] + "/3")
        assert channel is not None
        run_calls(channel, (pack(b"SET", b"in-db-3", b"yes"), 1))
        assert redis.cli("-n", "3", "GET", "in-db-3").strip() == "yes"
        assert redis.cli("-n", "0", "EXISTS", "in-db-3").strip() == "0"

    def test_password_authenticates_and_a_wrong_one_fails_clearly(self, locked_redis: RedisServer) -> None:
        """AUTH runs first; a refused AUTH is a connection error naming the refusal."""
        good = channel_for(f"redis://:s3cret@127.0.0.1:{locked_redis.port}/0")
        bad = channel_for(f"redis://:wrong@127.0.0.1:{locked_redis.port}/0")
        assert good is not None and bad is not None
        assert run_calls(good, (pack(b"PING"), 1)) == [[b"PONG"]]
        with pytest.raises(RedisConnectionError, match="refused"):
            run_calls(bad, (pack(b"PING"), 1))


class TestFailures:
    def test_restart_is_survived_by_one_retry(self, redis: RedisServer) -> None:
        """A connection broken by a restart is replaced and the batch sent again, once."""
        channel = channel_for(redis.url)
        assert channel is not None

        async def scenario() -> tuple[list[object], list[object]]:
            before = await channel.call(pack(b"PING"), 1)
            redis.restart()
            after = await channel.call(pack(b"PING"), 1)
            channel.close()
            return before, after

        assert asyncio.run(scenario()) == ([b"PONG"], [b"PONG"])

    def test_dead_server_is_a_connection_error(self, redis: RedisServer) -> None:
        """Nothing listening: the call fails fast with redis-py's ConnectionError (the limiter's policy applies)."""
        channel = channel_for(redis.url, connect_timeout=0.5)
        assert channel is not None
        redis.kill()
        with pytest.raises(RedisConnectionError):
            run_calls(channel, (pack(b"PING"), 1))

    def test_abandoned_call_does_not_shift_later_replies(self, redis: RedisServer) -> None:
        """A call cut off by a timeout while Redis is frozen never lends its reply to the next call."""
        channel = channel_for(redis.url)
        assert channel is not None

        async def scenario() -> list[object]:
            await channel.call(pack(b"SET", b"x", b"old"), 1)
            redis.freeze()
            try:
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(channel.call(pack(b"GET", b"x"), 1), 0.2)
            finally:
                redis.thaw()
            await channel.call(pack(b"SET", b"x", b"new"), 1)
            reply = await channel.call(pack(b"GET", b"x"), 1)
            channel.close()
            return reply

        assert asyncio.run(scenario()) == [b"new"]
