"""Settings of the ratelimit feature: the global limit, exemptions, Redis and the failure policy."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from ._base import SettingsSection, check_cidrs, check_path_patterns, split_list
from .redis_url import parse_redis_url

OnError = Literal["allow", "reject", "memory"]
StrTuple = Annotated[tuple[str, ...], NoDecode]

_KEY_SPEC = re.compile(r"^(ip|header:[A-Za-z0-9_-]+)$")


class RateLimitSettings(SettingsSection):
    """Knobs of the ratelimit feature."""

    rate_limit: str = Field(
        "",
        description=(
            "Global limit on every request, e.g. `100/second burst=200, 5000/hour` (off when empty). "
            "`burst=N` sets the bucket size of the rate before it (default: the rate's amount)."
        ),
    )
    rate_limit_key: str = Field(
        "ip",
        description="Who the global limit counts: `ip` (proxy-aware client address) or `header:<Name>` (API key).",
    )
    rate_limit_exempt_paths: StrTuple = Field(
        ("/healthz", "/readyz", "/metrics"),
        description="Paths the global limit never applies to (exact, or a prefix ending in `*`).",
    )
    rate_limit_exempt_networks: StrTuple = Field(
        (), description="Client networks (CIDRs) the global limit never applies to, e.g. `10.0.0.0/8`."
    )
    rate_limit_on_error: OnError = Field(
        "allow",
        description=(
            "When the Redis backend fails: `allow` (fail-open), `reject` (503), "
            "or `memory` (fall back to a per-process bucket)."
        ),
    )
    rate_limit_headers: bool = Field(True, description="Send `RateLimit`/`RateLimit-Policy` on allowed responses too.")
    rate_limit_legacy_headers: bool = Field(
        False, description="Also send `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`."
    )
    rate_limit_readiness_check: bool = Field(
        False,
        description=(
            "Make the readiness endpoint fail while Redis does not answer (off: with fail-open, "
            "a Redis outage must not take every pod out of the load balancer)."
        ),
    )
    rate_limit_key_prefix: str = Field("opskit:rl:", description="Prefix of every Redis key the limiter writes.")
    rate_limit_memory_max_keys: int = Field(
        100_000,
        ge=100,
        le=100_000_000,
        description="Most buckets the in-memory backend keeps (LRU), per process or in the workers' shared table.",
    )
    rate_limit_share_workers: bool = Field(
        True,
        description=(
            "Without Redis, let the workers of one `opskit serve` share their buckets in shared memory, so a "
            "limit means the same with 1 or 8 workers (off: each worker has its own buckets)."
        ),
    )
    rate_limit_shared_file: str = Field(
        "",
        description=(
            "The shared-memory table in which processes share buckets when there is no Redis: set by "
            "`opskit serve` for its workers; set it yourself for other pre-fork servers (e.g. a file in "
            "`/dev/shm`). Empty: per-process buckets."
        ),
    )
    rate_limit_local_share: float = Field(
        0.0,
        ge=0,
        le=0.5,
        description=(
            "With Redis: the share of a bucket's size a process reserves in one call and spends locally "
            "(e.g. `0.02`; `0`: one Redis call per decision). Across P processes a limit can be exceeded by "
            "at most P times that many tokens."
        ),
    )
    rate_limit_local_share_seconds: float = Field(
        1.0, gt=0, le=60, description="How long a process may spend reserved tokens before the rest expires."
    )
    rate_limit_breaker_failures: int = Field(
        3, ge=1, le=1000, description="Consecutive Redis failures that open the circuit breaker."
    )
    rate_limit_breaker_seconds: float = Field(
        2.0, gt=0, le=300, description="How long an open circuit breaker stops calling Redis."
    )
    rate_limit_log_interval: float = Field(
        10.0, gt=0, le=3600, description="At most one log line per failure reason in this many seconds."
    )

    redis_url: str = Field(
        "",
        description=(
            "Redis for shared limits: `redis://`, `rediss://` (TLS), `redis+sentinel://h1:26379,h2:26379/master`, "
            "`redis+cluster://`. Empty: per-process in-memory limits."
        ),
    )
    redis_timeout: float = Field(0.05, gt=0, le=30, description="Seconds a rate-limit decision may wait for Redis.")
    redis_max_connections: int = Field(16, ge=1, le=10_000, description="Redis connection pool size per process.")
    redis_pipelined: bool = Field(
        True,
        description=(
            "Send decisions over opskit's own pipelined connection (plain `redis://` URLs; the limiter then "
            "costs less than half the CPU per request). Off: every command goes through redis-py's pool."
        ),
    )

    @field_validator("rate_limit_exempt_paths", "rate_limit_exempt_networks", mode="before")
    @classmethod
    def _split_ratelimit_lists(cls, value: object) -> object:
        return split_list(value)

    @field_validator("rate_limit_exempt_paths")
    @classmethod
    def _rate_limit_exempt_paths_patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_path_patterns(value)

    @field_validator("rate_limit")
    @classmethod
    def _check_rate_limit(cls, value: str) -> str:
        if value.strip():
            from opskit.ratelimit.rate import parse_rates

            parse_rates(value)
        return value

    @field_validator("rate_limit_key")
    @classmethod
    def _check_rate_limit_key(cls, value: str) -> str:
        if not _KEY_SPEC.match(value):
            raise ValueError("expected `ip` or `header:<Header-Name>`")
        return value

    @field_validator("rate_limit_exempt_networks")
    @classmethod
    def _check_exempt_networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_cidrs(value)

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        if value:
            parse_redis_url(value)
        return value

    @field_validator("rate_limit_key_prefix")
    @classmethod
    def _check_key_prefix(cls, value: str) -> str:
        if "{" in value or "}" in value:
            raise ValueError("braces are reserved for Redis Cluster hash tags")
        return value
