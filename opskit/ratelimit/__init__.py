"""Rate limiting: token buckets in Redis (exact across pods) or in memory (shared by a server's workers).

Configure the global limit with ``OPSKIT_RATE_LIMIT``; limit single routes with the
:class:`RateLimit` FastAPI dependency (static or per-user rates and costs, :func:`charge` after
the fact, websocket handshakes and messages), or with the slowapi-shaped :mod:`opskit.ratelimit.slowapi`.
"""

from __future__ import annotations

from .charges import charge
from .decision import BackendError, Decision
from .dependency import RateLimit
from .limiter import RateLimiter
from .local_share import LocalShareBackend
from .memory import MemoryBackend
from .policy import Policy
from .rate import Rate, parse_rates
from .redis_backend import RedisBackend
from .selection import SHARED_FILE_ENV, prepare_workers
from .shared_memory import SharedMemoryBackend

__all__ = [
    "SHARED_FILE_ENV",
    "BackendError",
    "Decision",
    "LocalShareBackend",
    "MemoryBackend",
    "Policy",
    "Rate",
    "RateLimit",
    "RateLimiter",
    "RedisBackend",
    "SharedMemoryBackend",
    "charge",
    "parse_rates",
    "prepare_workers",
]
