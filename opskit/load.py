"""The latest load readings of this worker's event loop and thread pool, shared between features.

The runtime-health feature (``opskit.loop``) measures them on its lag probe and publishes them
here; the overload feature reads them into its saturation signal. Neither imports the other: both
reach the one :class:`LoadReadings` of the process's runtime through :func:`load_readings`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["LoadReadings", "load_readings"]


class LoadReadings:
    """What limits a worker besides its requests, as last measured (``None``: not measured).

    ``loop_busy`` is the share of wall time (0..1, smoothed over about a second) the event loop was
    busy; ``pool_busy`` and ``pool_size`` are anyio's default thread pool's borrowed tokens and
    its capacity. Plain attributes written by one thread (the loop's): a reader sees one reading or
    the next, never a torn one.
    """

    __slots__ = ("loop_busy", "pool_busy", "pool_size")

    def __init__(self) -> None:
        self.loop_busy: float | None = None
        self.pool_busy: int | None = None
        self.pool_size: int | None = None

    @property
    def pool_share(self) -> float | None:
        """Busy threads over the pool's size (0..1), or ``None`` when not measured."""
        busy, size = self.pool_busy, self.pool_size
        if busy is None or not size:
            return None
        return min(1.0, busy / size)


def load_readings(runtime: Runtime) -> LoadReadings:
    """The readings of ``runtime``'s process (one object, created on first use)."""
    readings: LoadReadings = runtime.service("load", lambda _runtime: LoadReadings())
    return readings
