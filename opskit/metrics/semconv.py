"""The request metrics under OpenTelemetry's HTTP semantic conventions (``OPSKIT_METRICS_NAMING=otel``).

The same component, with the hooks whose series differ: no request counter (the duration's
count is it), the duration and body sizes by method, route, status, scheme and ``error.type``,
requests in flight by method and scheme. The Prometheus naming keeps its own hot path unchanged.
"""

from __future__ import annotations

from typing import Final

from ..exchange import Exchange
from ..runtime import Runtime
from .component import METHODS, OTHER_METHOD, MetricsComponent, _Series
from .registry import Registry

__all__ = ["SemconvMetricsComponent", "scheme"]

#: ``url.scheme`` takes these values; a server reporting anything else counts as ``http``.
SCHEMES: Final = frozenset({"http", "https"})


def scheme(ex: Exchange) -> str:
    """The request's ``url.scheme``: the scope's (a trusted proxy's ``X-Forwarded-Proto`` is already in it)."""
    value = ex.scope.get("scheme")
    return value if value in SCHEMES else "http"


class SemconvMetricsComponent(MetricsComponent):
    """:class:`MetricsComponent` with the conventions' families: ``http.server.request.duration``,
    ``http.server.active_requests``, ``http.server.request.body.size``, ``http.server.response.body.size``."""

    def __init__(self, runtime: Runtime, registry: Registry | None = None) -> None:
        super().__init__(runtime, registry)
        self._semconv: dict[tuple[str, str | None, int, tuple[str, ...], str, str], _Series] = {}
        # Requests without extra labels or an exception, by route, status, method and the scope's
        # scheme, found without building a key (as the default naming's; only known values are kept).
        self._plain: dict[str | None, dict[int, dict[str, dict[str | None, _Series]]]] = {}

    def request_finished(self, ex: Exchange) -> None:
        try:
            self._live.remove(ex)
        except KeyError:
            return  # excluded path
        if self._labels is None and ex.exception is None:
            try:
                series = self._plain[ex.route][ex.status][ex.method][ex.scope.get("scheme")]
            except KeyError:
                series = self._plain_semconv_series(ex)
        else:
            series = self._semconv_series(ex)
        self._observe(ex, series)

    def _plain_semconv_series(self, ex: Exchange) -> _Series:
        series = self._semconv_series(ex)
        method, raw_scheme = ex.method, ex.scope.get("scheme")
        if method in METHODS and (raw_scheme is None or raw_scheme in SCHEMES):
            by_status = self._plain.setdefault(ex.route, {}).setdefault(ex.status, {})
            by_status.setdefault(method, {})[raw_scheme] = series
        return series

    def _semconv_series(self, ex: Exchange) -> _Series:
        # error.type: the exception's type when the app raised before its response finished,
        # else the status code of a 5xx (set in _series_for), else none.
        method = ex.method if ex.method in METHODS else OTHER_METHOD
        exception = type(ex.exception).__name__ if ex.exception is not None else ""
        extra = tuple(label.value(ex) for label in self._labels) if self._labels is not None else ()
        url_scheme = scheme(ex)
        status = ex.status
        key = (method, ex.route, status, extra, url_scheme, exception)
        series = self._semconv.get(key)
        if series is None:
            series = self._semconv[key] = self._series_for(
                method, ex.route, status, extra, scheme=url_scheme, exception=exception
            )
        return series

    def _in_flight_key(self, ex: Exchange, method: str) -> tuple[str, str]:
        return method, scheme(ex)
