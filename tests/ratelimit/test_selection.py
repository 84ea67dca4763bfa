"""Which backend a process gets from its settings, and when a server makes a table for its workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from opskit.ratelimit import LocalShareBackend, MemoryBackend, RedisBackend, SharedMemoryBackend
from opskit.ratelimit.selection import backend_from_settings, prepare_workers
from opskit.settings import ConfigError, Settings, load_settings


def settings(**overrides: Any) -> Settings:
    return load_settings(None, **overrides)


class TestBackendFromSettings:
    def test_one_process_without_redis_keeps_its_own_buckets(self) -> None:
        """No Redis and no table: the per-process backend."""
        backend = backend_from_settings(settings())
        assert type(backend) is MemoryBackend

    def test_a_named_table_is_shared(self, tmp_path: Path) -> None:
        """No Redis and a table named: the shared-memory backend on it, unless sharing is off."""
        path = str(tmp_path / "table")
        assert isinstance(backend_from_settings(settings(rate_limit_shared_file=path)), SharedMemoryBackend)
        off = settings(rate_limit_shared_file=path, rate_limit_share_workers=False)
        assert type(backend_from_settings(off)) is MemoryBackend

    def test_a_table_that_cannot_be_opened_leaves_per_process_buckets(self, caplog: pytest.LogCaptureFixture) -> None:
        """A process that did not inherit the table's descriptor decides alone, and says so."""
        backend = backend_from_settings(settings(rate_limit_shared_file="/proc/self/fd/987654"))
        assert type(backend) is MemoryBackend
        assert "cannot open the shared rate-limit table" in caplog.text

    def test_a_descriptor_that_is_no_table_is_never_overwritten(self, tmp_path: Path) -> None:
        """An inherited descriptor of some other file (a log) is refused, its content left alone."""
        log = tmp_path / "app.log"
        log.write_bytes(b"a line of the app's log\n")
        with open(log, "rb+") as f:
            backend = backend_from_settings(settings(rate_limit_shared_file=f"/proc/self/fd/{f.fileno()}"))
        assert type(backend) is MemoryBackend
        assert log.read_bytes() == b"a line of the app's log\n"

    def test_redis_wins_and_takes_local_shares_when_asked(self, tmp_path: Path) -> None:
        """With a Redis URL the table is ignored; a local share wraps the Redis backend."""
        url = "redis://127.0.0.1:1/0"
        plain = backend_from_settings(settings(redis_url=url, rate_limit_shared_file=str(tmp_path / "t")))
        assert isinstance(plain, RedisBackend)
        shared = backend_from_settings(settings(redis_url=url, rate_limit_local_share=0.02))
        assert isinstance(shared, LocalShareBackend)
        assert shared.share == 0.02

    def test_a_share_above_half_the_bucket_fails_at_startup(self) -> None:
        """A local share that would hand most of a bucket to one process names its variable."""
        with pytest.raises(ConfigError, match="OPSKIT_RATE_LIMIT_LOCAL_SHARE"):
            settings(rate_limit_local_share=0.9)


class TestPrepareWorkers:
    def test_a_table_only_for_several_workers_without_redis(self) -> None:
        """Several workers and no Redis get a table; one worker, Redis, or sharing off, none."""
        path = prepare_workers(settings(), 4)
        assert path is not None
        assert isinstance(SharedMemoryBackend(path), SharedMemoryBackend)
        assert prepare_workers(settings(), 1) is None
        assert prepare_workers(settings(redis_url="redis://127.0.0.1:1/0"), 4) is None
        assert prepare_workers(settings(rate_limit_share_workers=False), 4) is None
        assert prepare_workers(settings(ratelimit_enabled=False), 4) is None

    def test_a_named_table_is_used_as_it_is(self, tmp_path: Path) -> None:
        """A table the operator named is the workers' table, whatever their number."""
        path = str(tmp_path / "table")
        assert prepare_workers(settings(rate_limit_shared_file=path), 1) == path

    def test_a_master_started_with_another_masters_descriptor_makes_its_own_table(self) -> None:
        """An inherited ``/proc/self/fd/N`` (an upgraded master, exec'd) is not reused: a new table is made."""
        inherited = "/proc/self/fd/987654"
        path = prepare_workers(settings(rate_limit_shared_file=inherited), 2)
        assert path is not None and path != inherited
        assert isinstance(SharedMemoryBackend(path), SharedMemoryBackend)
