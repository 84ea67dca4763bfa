"""The per-request record: the facts about one request that several features share."""

from __future__ import annotations

from collections.abc import MutableMapping
from time import perf_counter
from typing import TYPE_CHECKING, Any

from starlette.types import Scope

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["SCOPE_KEY", "Exchange"]

#: The scope key under which the middleware leaves the request's Exchange for code below it
#: (route dependencies reach the limiter and the proxy-aware client through it).
SCOPE_KEY = "opskit.exchange"


class Exchange:
    """One HTTP request (or websocket connection) and its response, as the middleware saw them.

    Only facts shared across features live here: when it started and ended, its status and
    response size, its request ID, route template and client, whether the client left before the
    response was complete (``disconnected``), the exception that escaped the app, the sampled
    trace it belongs to (``trace_id``/``span_id``, read by the access log and metric exemplars)
    and ``annotations``, fields features and the app (:func:`opskit.annotate`) add to the
    request's access-log line, span and later log lines.
    Data private to one component goes in :attr:`state`, keyed by that component.
    """

    # Class-level defaults: a request pays only for the attributes that change.
    end = 0.0
    status = 0
    response_bytes = 0
    request_id: str | None = None
    route: str | None = None
    exception: BaseException | None = None
    trace_id: str | None = None
    span_id: str | None = None
    annotations: dict[str, Any] | None = None
    disconnected = False
    #: The trace ID as a number, sampled or not (tracing sets it; the access-log sampler decides from it).
    trace_number: int | None = None
    #: When the first part of a body that came in several parts was sent (``perf_counter``), else 0.
    first_byte = 0.0
    #: The response headers the app sent (before opskit's own were appended); recorded when
    #: response headers are captured (``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE``).
    app_headers: Any = ()
    #: Websocket messages the app sent and received.
    messages_sent = 0
    messages_received = 0
    _client: str | None | bool = False

    def __init__(self, scope: Scope, runtime: Runtime) -> None:
        self.scope = scope
        self.runtime = runtime
        self.method: str = scope.get("method", "")
        self.path: str = scope["path"]
        self.start = perf_counter()
        self.response_headers: list[tuple[bytes, bytes]] = []
        #: Per-request data private to components, each under its own key.
        self.state: dict[Any, Any] = {}

    @staticmethod
    def of(scope: MutableMapping[str, Any]) -> Exchange | None:
        """The Exchange of the request ``scope`` belongs to, when opskit's middleware is above."""
        found = scope.get(SCOPE_KEY)
        return found if isinstance(found, Exchange) else None

    @property
    def client(self) -> str | None:
        """The client address, proxy-aware (computed once, on first use)."""
        if self._client is False:
            self._client = self.runtime.proxies.client(self.scope)
        return self._client  # type: ignore[return-value]

    def annotate(self, **fields: Any) -> None:
        """Add fields to this request's access-log line and span, unchecked (for opskit's own
        fields; the app's go through :func:`opskit.annotate`)."""
        if self.annotations is None:
            self.annotations = {}
        self.annotations.update(fields)

    @property
    def duration(self) -> float:
        """Seconds from request start to the end of the response body."""
        return (self.end or perf_counter()) - self.start

    def header(self, name: bytes) -> bytes | None:
        """The first request header called ``name`` (lower-case bytes), if any."""
        for key, value in self.scope.get("headers", ()):
            if key == name:
                return value  # type: ignore[no-any-return]
        return None
