"""Settings of the serving feature: `opskit serve`, gunicorn workers, graceful shutdown.

The standard names (``WEB_CONCURRENCY``, ``PORT``, ``TIMEOUT``...) are the ones gunicorn images and
platforms have used for years; each also answers to its ``OPSKIT_`` name.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import NoDecode

from ._base import SettingsSection, check_host, check_port, env, split_host_port, split_list

StrTuple = Annotated[tuple[str, ...], NoDecode]


def check_bind_address(address: str) -> None:
    """Accept what gunicorn binds to: ``HOST:PORT``, ``[IPv6]:PORT``, ``HOST``, ``unix:PATH``, ``fd://N``."""
    if address.startswith("unix:"):
        if not address.removeprefix("unix:").lstrip("/"):
            raise ValueError(f"{address!r} names no socket path; expected unix:/run/app.sock")
        return
    if address.startswith("fd://"):
        if not address[5:].isdigit():
            raise ValueError(f"{address!r}: expected fd://<file descriptor number>")
        return
    host, port = split_host_port(address.removeprefix("tcp://"))
    if not host:
        raise ValueError(f"{address!r} is not HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N")
    check_host(host)
    if port:
        check_port(port, allow_zero=True)


class ServingSettings(SettingsSection):
    """Worker sizing, listener, timeouts and shutdown of `opskit serve` and the gunicorn config."""

    web_concurrency: int | None = Field(
        None,
        ge=1,
        validation_alias=env("WEB_CONCURRENCY", "OPSKIT_WEB_CONCURRENCY", "web_concurrency"),
        description="Exact number of worker processes; unset: sized from the container's CPUs and memory.",
    )
    workers_per_core: float = Field(
        1.0,
        gt=0,
        le=64,
        validation_alias=env("WORKERS_PER_CORE", "OPSKIT_WORKERS_PER_CORE", "workers_per_core"),
        description="Workers per usable CPU when `WEB_CONCURRENCY` is unset (rounded up).",
    )
    max_workers: int | None = Field(
        None,
        ge=1,
        validation_alias=env("MAX_WORKERS", "OPSKIT_MAX_WORKERS", "max_workers"),
        description="Upper bound of the computed worker count (not of `WEB_CONCURRENCY`).",
    )
    min_workers: int = Field(
        2,
        ge=1,
        description="Lower bound of the computed worker count: one stuck or restarting worker never empties the pod.",
    )
    worker_memory_mb: int = Field(
        128,
        ge=0,
        description="Memory budget per worker in MiB: the computed count never exceeds the cgroup memory limit "
        "divided by it (0: ignore memory).",
    )
    cgroup_root: str = Field(
        "/sys/fs/cgroup",
        description="Where the cgroup filesystem is mounted. Change it only to test with a fake cgroup tree.",
    )

    host: str = Field(
        "0.0.0.0",
        validation_alias=env("HOST", "OPSKIT_HOST", "host"),
        description="Address to listen on (ignored when `BIND` is set).",
    )
    port: int = Field(
        8000,
        ge=0,
        le=65535,
        validation_alias=env("PORT", "OPSKIT_PORT", "port"),
        description="Port to listen on (ignored when `BIND` is set).",
    )
    bind: StrTuple = Field(
        (),
        validation_alias=env("BIND", "OPSKIT_BIND", "bind"),
        description="Comma-separated gunicorn bind addresses (`HOST:PORT`, `unix:PATH`); overrides `HOST`/`PORT`.",
    )
    timeout: int = Field(
        30,
        ge=0,
        validation_alias=env("TIMEOUT", "OPSKIT_TIMEOUT", "timeout"),
        description="Seconds a worker's event loop may stay blocked before the master kills it (0: never).",
    )
    graceful_timeout: int = Field(
        30,
        ge=1,
        validation_alias=env("GRACEFUL_TIMEOUT", "OPSKIT_GRACEFUL_TIMEOUT", "graceful_timeout"),
        description="Seconds workers get after SIGTERM (shutdown delay included) to finish in-flight requests.",
    )
    keep_alive: int = Field(
        5,
        ge=0,
        validation_alias=env("KEEP_ALIVE", "OPSKIT_KEEP_ALIVE", "keep_alive"),
        description="Seconds an idle keep-alive connection stays open; keep it above the load balancer's.",
    )
    max_requests: int = Field(
        0,
        ge=0,
        validation_alias=env("MAX_REQUESTS", "OPSKIT_MAX_REQUESTS", "max_requests"),
        description="Restart a worker after this many requests (0: never).",
    )
    max_requests_jitter: int = Field(
        0,
        ge=0,
        validation_alias=env("MAX_REQUESTS_JITTER", "OPSKIT_MAX_REQUESTS_JITTER", "max_requests_jitter"),
        description="Random extra requests added to `MAX_REQUESTS` per worker, so workers do not restart together.",
    )
    forwarded_allow_ips: StrTuple | None = Field(
        None,
        validation_alias=env("FORWARDED_ALLOW_IPS", "OPSKIT_FORWARDED_ALLOW_IPS", "forwarded_allow_ips"),
        description="Peers (IPs/CIDRs, `*` for any) whose `X-Forwarded-For`/`-Proto` opskit applies to "
        "the request's client and scheme; unset: `OPSKIT_TRUSTED_PROXIES` (default: nobody).",
    )

    startup_delay: float = Field(
        0.0, ge=0, le=600, description="Seconds to wait before opening the listener (e.g. for a sidecar proxy)."
    )
    shutdown_delay: float = Field(
        0.0,
        ge=0,
        le=600,
        description="Seconds (less than `GRACEFUL_TIMEOUT`) to keep serving after SIGTERM with readiness at 503 "
        "before the listener closes, so load balancers stop routing first (the Helm chart uses a preStop hook).",
    )

    @field_validator("bind", "forwarded_allow_ips", mode="before")
    @classmethod
    def _split_serving_lists(cls, value: object) -> object:
        return split_list(value)

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _serving_forwarded_addresses(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for address in value or ():
            if address == "*":
                continue
            try:
                ipaddress.ip_network(address, strict=False)
            except ValueError:
                raise ValueError(
                    f"{address!r} is not an address; expected IPs or CIDRs like 10.0.0.0/8, or *"
                ) from None
        return value

    @field_validator("shutdown_delay")
    @classmethod
    def _serving_delay_fits(cls, value: float, info: ValidationInfo) -> float:
        graceful = info.data.get("graceful_timeout")
        if graceful is not None and value >= graceful:
            raise ValueError(f"must be shorter than GRACEFUL_TIMEOUT ({graceful}s), which includes it")
        return value

    @field_validator("bind")
    @classmethod
    def _serving_bind(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for address in value:
            check_bind_address(address)
        return value

    @field_validator("host")
    @classmethod
    def _serving_host(cls, value: str) -> str:
        return check_host(value)
