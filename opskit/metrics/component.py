"""The metrics feature of the opskit middleware: RED metrics per route and the metrics endpoints.

``http_requests_in_progress`` needs a route before the response, but the route is known only
once the router has run inside the app. The component therefore keeps the requests in flight in
a set (an add and a remove per request, nothing in shared memory) and turns the set into gauge
values by route when it is read: on every scrape for the answering worker (exact), and every
``OPSKIT_METRICS_IN_PROGRESS_INTERVAL`` seconds for the others. The route of a request in flight
comes from what the router left in its scope, without matching again; a request the router has
not reached yet counts under the unmatched route.
"""

from __future__ import annotations

import asyncio
import contextlib
from bisect import bisect_left
from time import time
from typing import Final, NamedTuple

from starlette.types import ASGIApp

from ..annotations import policy
from ..component import Component
from ..exchange import Exchange
from ..paths import PathPatterns
from ..runtime import Runtime
from . import naming
from .client_bridge import ClientMetrics
from .endpoint import MetricsEndpoint, MetricsServer, Scrape
from .labels import ExtraLabel, extra_labels
from .registry import Counter, CounterChild, Histogram, HistogramChild, Registry

__all__ = ["MetricsComponent", "create_component", "metrics_component"]

METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
OTHER_METHOD: Final = "OTHER"
#: Websocket connections last from seconds to hours.
WEBSOCKET_BUCKETS: Final = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)


class _Series(NamedTuple):
    """Where one (method, route, status) writes in the store, resolved once.

    A request unpacks it into locals and does its adds under one hold of the lock: in CPython an
    attribute lookup or a method call costs more than the float add it leads to.
    """

    requests: int  # the counter's index; -1 under OpenTelemetry's naming (the duration's count counts requests)
    duration_bounds: tuple[float, ...]
    duration: int  # first bucket
    duration_sum: int
    size_bounds: tuple[float, ...]  # () without the size histograms
    request_size_zero: int  # the bucket of a request without a body, most requests
    request_size: int
    request_size_sum: int
    response_size: int
    response_size_sum: int
    requests_child: CounterChild | None  # for exemplars
    duration_child: HistogramChild


class MetricsComponent(Component):
    """Counts, times and sizes every request by method, route template and status."""

    def __init__(self, runtime: Runtime, registry: Registry | None = None) -> None:
        settings = runtime.settings
        registry = registry if registry is not None else runtime.registry
        self.settings = settings
        self.registry = registry
        self.routes = runtime.routes
        self._store = registry.store
        self._group_status = settings.metrics_group_status
        self._exemplars = settings.metrics_exemplars
        self._sizes = settings.metrics_size_enabled
        excluded = settings.metrics_exclude_paths
        self._excluded = PathPatterns(excluded)
        # Exact paths alone (the default) are one frozenset lookup, without a method call.
        patterns = self._excluded
        self._excluded_paths: PathPatterns | frozenset[str] = patterns if patterns.prefixes else patterns.exact

        self._labels: tuple[ExtraLabel, ...] | None = None
        if settings.metrics_labels:
            overflow = registry.counter(
                "opskit_metrics_label_overflow_total",
                "Requests whose extra label value was counted as __other__ (past OPSKIT_METRICS_LABEL_LIMIT).",
                ("label",),
            )
            self._labels = extra_labels(
                settings.metrics_labels, settings.metrics_label_limit, overflow, policy(runtime)
            )
        extra = tuple(label.name for label in self._labels or ())
        table = naming.families(settings.metrics_naming)
        self._active_family = table["active"]
        requests = table.get("requests")
        self.requests: Counter | None = naming.counter(registry, requests, extra) if requests else None
        durations = settings.metrics_duration_buckets
        self.duration: Histogram = naming.histogram(registry, table["duration"], durations, extra)
        self.first_byte = naming.histogram(registry, table["first_byte"], durations)
        self._first_byte: dict[tuple[str, str | None], HistogramChild] = {}
        self.ws_opened = naming.counter(registry, table["ws_opened"])
        self.ws_open = naming.gauge(registry, table["ws_open"])
        self.ws_duration = naming.histogram(registry, table["ws_duration"], WEBSOCKET_BUCKETS)
        self.ws_messages = naming.counter(registry, table["ws_messages"])
        self.in_progress = naming.gauge(registry, table["active"])
        self.exceptions = naming.counter(registry, table["exceptions"])
        self.request_size = self.response_size = None
        if self._sizes:
            sizes = settings.metrics_size_buckets
            self.request_size = naming.histogram(registry, table["request_size"], sizes)
            self.response_size = naming.histogram(registry, table["response_size"], sizes)
        self._size_family = table["request_size"]
        self._duration_family = table["duration"]
        self._requests_family = requests
        build = registry.gauge("opskit_build_info", "Service version; always 1.", ("version", "service"), mode="max")
        build.labels(settings.service_version, settings.service_name).set(1)

        # By route, status, then method: found without building a key (requests with a method
        # outside METHODS miss it and take the slow path, so it holds known methods only).
        self._series: dict[str | None, dict[int, dict[str, _Series]]] = {}
        self._labelled: dict[tuple[str, str | None, int, tuple[str, ...]], _Series] = {}
        self._live: set[Exchange] = set()
        self._in_progress_keys: set[tuple[str, str]] = set()
        self._ticker: asyncio.Task[None] | None = None

        client = ClientMetrics(registry.directory, settings.prometheus_multiproc_dir)
        self.scrape = Scrape(registry, before=self.update_in_progress, client=client)
        self.server: MetricsServer | None = None
        if settings.metrics_port is not None and settings.metrics_prometheus:
            self.server = MetricsServer(
                self.scrape,
                host=settings.metrics_host,
                port=settings.metrics_port,
                path=settings.metrics_path,
                reuse_port=registry.directory is not None,
            )

    def endpoints(self) -> dict[str, ASGIApp]:
        if not (self.settings.metrics_on_app_port and self.settings.metrics_prometheus):
            return {}  # OTEL_METRICS_EXPORTER=otlp alone: no Prometheus endpoint
        return {self.settings.metrics_path: MetricsEndpoint(self.scrape)}

    def request_started(self, ex: Exchange) -> None:
        if ex.path in self._excluded_paths:
            return
        self._live.add(ex)

    def request_finished(self, ex: Exchange) -> None:
        try:
            self._live.remove(ex)
        except KeyError:
            return  # excluded path
        if self._labels is None:
            try:
                series = self._series[ex.route][ex.status][ex.method]
            except KeyError:
                series = self._plain_series(ex)
        else:
            series = self._labelled_series(ex)
        self._observe(ex, series)

    def _observe(self, ex: Exchange, series: _Series) -> None:
        """Count, time and size a finished request into ``series``, under one hold of the store's lock."""
        (
            requests,
            duration_bounds,
            duration_at,
            duration_sum,
            size_bounds,
            request_zero,
            request_at,
            request_sum,
            response_at,
            response_sum,
            _,
            _,
        ) = series
        if ex.first_byte:
            self._observe_first_byte(ex)
        duration = ex.end - ex.start
        request_bytes = 0
        if size_bounds:
            for name, value in ex.scope.get("headers", ()):  # inlined rather than ex.header(): a call less
                if name == b"content-length":
                    request_bytes = _content_length(value)
                    break
        trace_id = ex.trace_id
        store = self._store
        lock = store.lock
        lock.acquire()  # not ``with``: its special-method lookups cost as much as two adds
        try:
            v = store.v
            if requests >= 0:
                v[requests] += 1.0
            bucket = bisect_left(duration_bounds, duration)
            v[duration_at + bucket] += 1.0
            v[duration_sum] += duration
            if size_bounds:
                if request_bytes:
                    v[request_at + bisect_left(size_bounds, request_bytes)] += 1.0
                    v[request_sum] += request_bytes
                else:
                    v[request_zero] += 1.0
                response_bytes = ex.response_bytes
                v[response_at + bisect_left(size_bounds, response_bytes)] += 1.0
                v[response_sum] += response_bytes
            if trace_id and self._exemplars:
                now = time()
                if series.requests_child is not None:
                    series.requests_child.exemplar_locked(trace_id, 1.0, now)
                series.duration_child.exemplar_locked(bucket, trace_id, duration, now)
        finally:
            lock.release()

    def request_failed(self, ex: Exchange) -> None:
        # Here, not in request_finished: Starlette's ServerErrorMiddleware sends its 500 (which
        # finishes the request) before the exception reaches opskit's middleware.
        if not self._measured(ex.path):
            return
        method = ex.method if ex.method in METHODS else OTHER_METHOD
        route = ex.route or self.settings.unmatched_route
        self.exceptions.labels(method, route, type(ex.exception).__name__).inc()

    def _measured(self, path: str) -> bool:
        return path not in self._excluded

    def _series_for(
        self,
        method: str,
        route: str | None,
        status: int,
        extra: tuple[str, ...] = (),
        *,
        scheme: str = "",
        exception: str = "",
    ) -> _Series:
        label_route = route or self.settings.unmatched_route
        label_status = f"{status // 100}xx" if self._group_status and status else str(status)
        error = exception or (label_status if status >= 500 else "")
        fields = {"method": method, "route": label_route, "status": label_status, "scheme": scheme, "error": error}
        size_bounds: tuple[float, ...] = ()
        request_zero = request_at = request_sum = response_at = response_sum = -1
        if self.request_size is not None and self.response_size is not None:
            labels = _pick(self._size_family, fields)
            request_size = self.request_size.labels(*labels)
            response_size = self.response_size.labels(*labels)
            size_bounds = self.request_size.bounds
            request_at, request_sum = request_size.index, request_size.sum_index
            request_zero = request_at + bisect_left(size_bounds, 0)
            response_at, response_sum = response_size.index, response_size.sum_index
        requests = None
        if self.requests is not None and self._requests_family is not None:
            requests = self.requests.labels(*_pick(self._requests_family, fields), *extra)
        duration = self.duration.labels(*_pick(self._duration_family, fields), *extra)
        series = _Series(
            requests.index if requests is not None else -1,
            self.duration.bounds,
            duration.index,
            duration.sum_index,
            size_bounds,
            request_zero,
            request_at,
            request_sum,
            response_at,
            response_sum,
            requests,
            duration,
        )
        # A route served once has an in-flight series from then on (0 when idle), not "no data".
        self.in_progress.labels(*_pick(self._active_family, fields))
        return series

    def _plain_series(self, ex: Exchange) -> _Series:
        """The series of ``ex`` without extra labels, found or made (the miss of the request hook's lookup)."""
        method = ex.method if ex.method in METHODS else OTHER_METHOD
        by_method = self._series.setdefault(ex.route, {}).setdefault(ex.status, {})
        series = by_method.get(method)
        if series is None:
            series = by_method[method] = self._series_for(method, ex.route, ex.status)
        return series

    def _labelled_series(self, ex: Exchange) -> _Series:
        method = ex.method if ex.method in METHODS else OTHER_METHOD
        extra = tuple(label.value(ex) for label in self._labels or ())
        key = (method, ex.route, ex.status, extra)
        series = self._labelled.get(key)
        if series is None:
            series = self._labelled[key] = self._series_for(method, ex.route, ex.status, extra)
        return series

    def _observe_first_byte(self, ex: Exchange) -> None:
        method = ex.method if ex.method in METHODS else OTHER_METHOD
        key = (method, ex.route)
        child = self._first_byte.get(key)
        if child is None:
            child = self._first_byte[key] = self.first_byte.labels(method, ex.route or self.settings.unmatched_route)
        child.observe(ex.first_byte - ex.start)

    def websocket_accepted(self, ex: Exchange) -> None:
        if not self._measured(ex.path):
            return
        route = ex.route or self.settings.unmatched_route
        ex.state[self] = route  # the gauge goes down under the label it went up under
        self.ws_opened.labels(route).inc()
        self.ws_open.labels(route).inc()

    def websocket_closed(self, ex: Exchange) -> None:
        route = ex.state.pop(self, None)
        if route is None:
            return  # refused: never open
        self.ws_open.labels(route).dec()
        self.ws_duration.labels(route).observe(ex.end - ex.start)
        if ex.messages_received:
            self.ws_messages.labels(route, "received").inc(ex.messages_received)
        if ex.messages_sent:
            self.ws_messages.labels(route, "sent").inc(ex.messages_sent)

    def update_in_progress(self) -> None:
        """Write this worker's requests in flight, by method and route, to the gauge."""
        if not self._live and not self._in_progress_keys:
            return
        counts: dict[tuple[str, str], int] = {}
        in_flight_key = self._in_flight_key
        for ex in list(self._live):
            key = in_flight_key(ex, ex.method if ex.method in METHODS else OTHER_METHOD)
            counts[key] = counts.get(key, 0) + 1
        for key in self._in_progress_keys - counts.keys():
            self.in_progress.labels(*key).set(0)
        for key, n in counts.items():
            self.in_progress.labels(*key).set(n)
        self._in_progress_keys = set(counts)

    def _in_flight_key(self, ex: Exchange, method: str) -> tuple[str, str]:
        """The in-flight gauge's labels for a request being served."""
        return method, self.routes.resolve(ex.scope)

    async def _tick(self) -> None:
        interval = self.settings.metrics_in_progress_interval
        while True:
            await asyncio.sleep(interval)
            self.update_in_progress()

    async def startup(self) -> None:
        self._ticker = asyncio.get_running_loop().create_task(self._tick())
        if self.server is not None:
            await self.server.start()

    async def shutdown(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self.server is not None:
            await self.server.stop()


def _pick(family: naming.Family, fields: dict[str, str]) -> tuple[str, ...]:
    return tuple(fields[field] for field in family.fields)


def _content_length(value: bytes) -> int:
    try:
        n = int(value)
    except ValueError:
        return 0
    return n if n >= 0 else 0


def metrics_component(runtime: Runtime, registry: Registry | None = None) -> MetricsComponent:
    """The metrics component of ``OPSKIT_METRICS_NAMING`` (each naming has its own request hook)."""
    if runtime.settings.metrics_naming == "otel":
        from .semconv import SemconvMetricsComponent

        return SemconvMetricsComponent(runtime, registry)
    return MetricsComponent(runtime, registry)


def create_component(runtime: Runtime) -> MetricsComponent | None:
    """The metrics component, unless ``OPSKIT_METRICS_ENABLED=false``."""
    return metrics_component(runtime) if runtime.settings.metrics_enabled else None
