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

    def request_finished(self, ex: Exchange) -> None:
        try:
            self._live.remove(ex)
        except KeyError:
            return  # excluded path
        method = ex.method if ex.method in METHODS else OTHER_METHOD
        self._observe(ex, self._semconv_series(ex, method))

    def _semconv_series(self, ex: Exchange, method: str) -> _Series:
        # error.type: the exception's type when the app raised before its response finished,
        # else the status code of a 5xx (set in _series_for), else none.
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
