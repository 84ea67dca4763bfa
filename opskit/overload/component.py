"""The overload component: the concurrency cap as the first ``admit`` gate, queue time, the saturation signal.

Which hooks a component has depends on what is configured, so that a worker without a cap or a
trusted proxy pays for neither on its requests (the middleware calls only the hooks a component
overrides): the saturation signal alone is a timer, queue time adds ``request_started``, the cap
adds ``admit`` and ``request_closed``.
"""

from __future__ import annotations

import asyncio
from time import monotonic, perf_counter, time
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from ..component import Component
from ..exchange import Exchange
from ..health import add_readiness_check, remove_readiness_check
from ..load import load_readings
from ..throttle import ThrottledLog
from .limit import AdaptiveLimit, FixedLimit, Limit
from .metrics import OverloadMetrics
from .queue_time import queue_seconds
from .saturation import Saturation

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = [
    "SAMPLE_INTERVAL",
    "OverloadComponent",
    "QueueTimeComponent",
    "QueueTimeSheddingComponent",
    "SheddingComponent",
    "create_component",
    "shed_app",
]

#: Seconds between two samples of the saturation signal (and its gauges).
SAMPLE_INTERVAL = 0.25
_ADMITTED = "opskit.overload"  # ex.state key: how many requests were in flight when this one was admitted
_READINESS = "saturation"


def shed_app(retry_after: int) -> ASGIApp:
    """The ASGI app answering a shed request: 503, ``Retry-After``, FastAPI's error shape."""
    body = orjson.dumps({"detail": "Service overloaded, retry later"})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(retry_after).encode()),
        (b"cache-control", b"no-store"),
    ]
    start = {"type": "http.response.start", "status": 503, "headers": headers}
    end = {"type": "http.response.body", "body": body}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(dict(start))
        await send(dict(end))

    return app


class OverloadComponent(Component):
    """The saturation gauge (and the readiness check on it), sampled by a timer on the loop."""

    limit: Limit | None = None

    def __init__(self, runtime: Runtime, metrics: OverloadMetrics | None = None) -> None:
        settings = runtime.settings
        self.metrics = metrics if metrics is not None else OverloadMetrics(runtime.registry)
        self.saturation = Saturation(load_readings(runtime))
        self.in_flight = 0
        self._ready_below = settings.readiness_max_saturation
        self._in_flight_gauge = self.metrics.in_flight.labels()
        self._limit_gauge = self.metrics.limit.labels()
        self._saturation_gauge = self.metrics.saturation.labels()
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tick()
        if self._ready_below > 0:
            add_readiness_check(_READINESS, self._ready)

    async def shutdown(self) -> None:
        if self._ready_below > 0:
            remove_readiness_check(_READINESS)
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._loop = None

    async def _ready(self) -> bool:
        return self.saturation.value < self._ready_below

    def _tick(self) -> None:
        loop = self._loop
        if loop is None:
            return
        self._handle = loop.call_later(SAMPLE_INTERVAL, self._tick)
        limit = self.limit
        cap = limit.cap if limit is not None else None
        self._saturation_gauge.set(self.saturation.sample(monotonic(), self.in_flight, cap))
        self._in_flight_gauge.set(self.in_flight)
        if cap is not None:
            self._limit_gauge.set(cap)


class QueueTimeComponent(OverloadComponent):
    """:class:`OverloadComponent` plus the queue time of requests a trusted proxy stamped."""

    def __init__(self, runtime: Runtime, metrics: OverloadMetrics | None = None) -> None:
        super().__init__(runtime, metrics)
        self._header = runtime.settings.queue_time_header.lower().encode("ascii")
        self._proxies = runtime.proxies
        self._queue = self.metrics.queue.labels()
        self._ignored = {r: self.metrics.queue_ignored.labels(r) for r in ("malformed", "negative", "too_large")}

    def request_started(self, ex: Exchange) -> None:
        value = ex.header(self._header)
        if value is None or not self._proxies.via_trusted_proxy(ex.scope):
            return
        waited = queue_seconds(value, time())
        if isinstance(waited, str):
            self._ignored[waited].inc()
        else:
            self._queue.observe(waited)


class SheddingComponent(OverloadComponent):
    """:class:`OverloadComponent` plus the concurrency cap: the ``admit`` gate and its release."""

    def __init__(self, runtime: Runtime, metrics: OverloadMetrics | None = None) -> None:
        super().__init__(runtime, metrics)
        settings = runtime.settings
        if settings.max_in_flight == "auto":
            self.limit = AdaptiveLimit(
                settings.max_in_flight_min, settings.max_in_flight_max, settings.max_in_flight_tolerance
            )
        else:
            self.limit = FixedLimit(settings.max_in_flight)
        self.reason = "adaptive_limit" if self.limit.adaptive else "max_in_flight"
        self._exempt = frozenset((settings.health_path, settings.readiness_path, settings.metrics_path))
        self._shed = self.metrics.shed.labels(self.reason)
        self._answer = shed_app(settings.overload_retry_after)
        self._log = ThrottledLog(structlog.get_logger("opskit.overload"), 10.0)

    async def admit(self, ex: Exchange) -> ASGIApp | None:
        limit: Any = self.limit
        in_flight = self.in_flight
        if in_flight >= limit.cap and ex.path not in self._exempt:
            self._shed.inc()
            ex.annotate(shed=self.reason)
            self._log.warning(self.reason, "shedding requests: the worker is at its concurrency cap", cap=limit.cap)
            return self._answer
        self.in_flight = in_flight + 1
        ex.state[_ADMITTED] = in_flight
        # The requests the server read in the same loop iteration are tasks queued behind this one.
        # A route that never awaits would otherwise finish before the next is even counted (in
        # flight would never exceed 1): one yield lets each of them take its slot, or be shed,
        # before any of them runs.
        await asyncio.sleep(0)
        return None

    def request_closed(self, ex: Exchange) -> None:
        before = ex.state.pop(_ADMITTED, None)
        if before is None:
            return
        self.in_flight -= 1
        limit: Any = self.limit
        if limit.adaptive and ex.exception is None and not ex.disconnected and ex.status < 500:
            limit.completed(perf_counter() - ex.start, before)


class QueueTimeSheddingComponent(SheddingComponent, QueueTimeComponent):
    """The cap and queue time together."""


def create_component(runtime: Runtime) -> OverloadComponent | None:
    """The overload component (``None`` when ``OPSKIT_OVERLOAD_ENABLED=false``), with the hooks its settings need."""
    settings = runtime.settings
    if not settings.overload_enabled:
        return None
    shedding = settings.max_in_flight != 0
    queue_time = bool(settings.queue_time_header) and runtime.proxies.enabled
    if shedding and queue_time:
        return QueueTimeSheddingComponent(runtime)
    if shedding:
        return SheddingComponent(runtime)
    if queue_time:
        return QueueTimeComponent(runtime)
    return OverloadComponent(runtime)
