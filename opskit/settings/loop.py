"""Settings of the runtime-health feature: event-loop lag, blocked-loop watchdog, thread pool, background tasks."""

from __future__ import annotations

from pydantic import Field

from ._base import SettingsSection


class LoopSettings(SettingsSection):
    """Knobs of ``opskit.loop``: how the event loop, anyio's thread pool and BackgroundTasks are watched."""

    runtime_enabled: bool = Field(
        True,
        description="Event-loop lag, the blocked-loop watchdog, thread-pool and background-task metrics.",
    )
    runtime_lag_interval: float = Field(
        0.05,
        ge=0.005,
        le=10,
        description="Seconds between two event-loop lag probes (a timer on the loop; how late it runs is the lag). "
        "A blocked loop is noticed within this much of `OPSKIT_RUNTIME_BLOCKED_THRESHOLD`.",
    )
    runtime_blocked_threshold: float = Field(
        0.1,
        ge=0,
        le=600,
        description="Seconds the event loop may stay busy in one go before a watchdog thread writes one warning "
        "with the stack and the request that blocks it (0: no watchdog).",
    )
    runtime_stack_depth: int = Field(
        12, ge=1, le=100, description="Most stack frames in a blocked-loop warning (innermost first)."
    )
    runtime_warnings_per_minute: int = Field(
        10,
        ge=1,
        le=10_000,
        description="Most blocked-loop and thread-pool warning lines a worker writes per minute; the rest are "
        "counted in `opskit_runtime_warnings_suppressed_total`.",
    )
    threadpool_size: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="Threads of anyio's default pool (`def` endpoints, sync dependencies, `run_in_threadpool`), "
        "set at startup; empty: anyio's 40.",
    )
    runtime_threadpool_saturated_threshold: float = Field(
        1.0,
        gt=0,
        le=600,
        description="Seconds the thread pool may stay full before one warning line.",
    )
    runtime_background_task_names: int = Field(
        50,
        ge=1,
        le=1000,
        description="Most background-task function names used as the `task` label; later ones count as `other`.",
    )
