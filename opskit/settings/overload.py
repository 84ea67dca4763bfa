"""Settings of the overload feature: the concurrency cap, queue time and the saturation signal."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from ._base import SettingsSection

MaxInFlight = Annotated[int, Field(ge=0, le=100_000)] | Literal["auto"]


class OverloadSettings(SettingsSection):
    """Knobs of ``opskit.overload``: how many requests a worker takes on, and what it reports about its load."""

    overload_enabled: bool = Field(
        True,
        description="The saturation gauge, queue time from the load balancer and (when set) the concurrency cap.",
    )
    max_in_flight: MaxInFlight = Field(
        0,
        description="Most requests a worker serves at once; beyond it an immediate 503 with `Retry-After` "
        "(health probes and `/metrics` are never shed). `0`: no cap; `auto`: a cap adapted from measured "
        "latency between `OPSKIT_MAX_IN_FLIGHT_MIN` and `OPSKIT_MAX_IN_FLIGHT_MAX`.",
    )
    max_in_flight_min: int = Field(1, ge=1, le=100_000, description="Lowest cap `OPSKIT_MAX_IN_FLIGHT=auto` may set.")
    max_in_flight_max: int = Field(
        200, ge=1, le=100_000, description="Highest cap `OPSKIT_MAX_IN_FLIGHT=auto` may set, and where it starts."
    )
    max_in_flight_tolerance: float = Field(
        1.4,
        ge=1.05,
        le=100,
        description="`auto` lowers the cap when recent requests take on average more than this many times "
        "as long as requests that found the worker empty.",
    )
    overload_retry_after: int = Field(
        1, ge=1, le=3600, description="Seconds in the `Retry-After` header of a shed request's 503."
    )
    queue_time_header: str = Field(
        "X-Request-Start",
        max_length=100,
        description="Header in which the load balancer sends when it received the request (`t=<seconds>`, "
        "milliseconds or microseconds), believed only from `OPSKIT_TRUSTED_PROXIES`; empty: no queue time.",
    )
    readiness_max_saturation: float = Field(
        0.0,
        ge=0,
        le=1,
        description="`/readyz` answers 503 while `opskit_saturation` is at least this, dropping the pod out of "
        "the Service until it catches up (0: never; see the trade-off in the README).",
    )

    @field_validator("queue_time_header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        value = value.strip()
        if value and not all(c.isalnum() or c in "-_" for c in value):
            raise ValueError(f"{value!r} is not a header name")
        return value

    @field_validator("max_in_flight_max")
    @classmethod
    def _above_min(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("max_in_flight_min")
        if low is not None and value < low:
            raise ValueError(f"must be at least OPSKIT_MAX_IN_FLIGHT_MIN ({low})")
        return value
