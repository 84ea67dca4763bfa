"""Which backend a process decides with, and what a server prepares for its workers: one place.

* ``OPSKIT_REDIS_URL`` set: Redis, exact across pods; with ``OPSKIT_RATE_LIMIT_LOCAL_SHARE`` each
  process reserves shares of hot buckets (:mod:`.local_share`).
* No Redis, several workers under ``opskit serve``: the master creates a shared-memory table before
  forking (:func:`prepare_workers`) and names it in ``OPSKIT_RATE_LIMIT_SHARED_FILE``; every worker
  decides in it (:mod:`.shared_memory`), exact per pod.
* Otherwise (one process, or ``OPSKIT_RATE_LIMIT_SHARE_WORKERS=false``): per-process buckets.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .local_share import LocalShareBackend
from .memory import MemoryBackend
from .redis_backend import RedisBackend, redis_backend
from .shared_memory import DESCRIPTOR_PATHS, SharedMemoryBackend, create_table

if TYPE_CHECKING:
    from opskit.settings import Settings

__all__ = ["SHARED_FILE_ENV", "Backend", "backend_from_settings", "prepare_workers"]

SHARED_FILE_ENV = "OPSKIT_RATE_LIMIT_SHARED_FILE"

logger = logging.getLogger("opskit.ratelimit")

Backend = RedisBackend | LocalShareBackend | MemoryBackend


def backend_from_settings(settings: Settings) -> Backend:
    """The backend of this process (see the module docstring)."""
    if settings.redis_url:
        remote = redis_backend(
            settings.redis_url,
            timeout=settings.redis_timeout,
            max_connections=settings.redis_max_connections,
            pipelined=settings.redis_pipelined,
        )
        if not settings.rate_limit_local_share:
            return remote
        return LocalShareBackend(
            remote,
            settings.rate_limit_local_share,
            seconds=settings.rate_limit_local_share_seconds,
            max_keys=min(settings.rate_limit_memory_max_keys, 100_000),
        )
    if settings.rate_limit_shared_file and settings.rate_limit_share_workers:
        try:
            return SharedMemoryBackend(settings.rate_limit_shared_file, settings.rate_limit_memory_max_keys)
        except OSError as exc:  # e.g. a process started by a worker, without the worker's descriptor
            logger.warning(
                "cannot open the shared rate-limit table %s (%s): per-process buckets",
                settings.rate_limit_shared_file,
                exc.strerror or exc,
            )
    return MemoryBackend(settings.rate_limit_memory_max_keys)


def prepare_workers(settings: Settings, workers: int) -> str | None:
    """In a server's master, before it forks ``workers`` workers: the shared table's path, or ``None``.

    A table is made when the workers would otherwise each have their own buckets: the limiter is on,
    there is no Redis, there is more than one worker, sharing is not switched off, and no table is
    named already (a named one is used as it is).
    """
    if not settings.ratelimit_enabled or settings.redis_url or not settings.rate_limit_share_workers:
        return None
    named = settings.rate_limit_shared_file
    # A descriptor path names the table of the master that set it (this one was exec'd, e.g. by
    # gunicorn's USR2 upgrade): it does not hold that descriptor, so it makes its own.
    if named and not named.startswith(DESCRIPTOR_PATHS):
        return named
    if workers < 2:
        return None
    return create_table(settings.rate_limit_memory_max_keys)
