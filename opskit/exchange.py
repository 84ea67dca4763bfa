"""The per-request record that every opskit feature reads and writes."""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING, Any

from starlette.types import Scope

if TYPE_CHECKING:
    from .client_ip import ProxyResolver

__all__ = ["Exchange"]


class Exchange:
    """One HTTP request and its response, as the middleware saw them.

    Created before the app is called; ``status`` is set on response start; ``route``, ``end``
    and ``response_bytes`` when the body is complete (or the app ended without one).
    """

    __slots__ = (
        "_client",
        "_proxies",
        "end",
        "exception",
        "method",
        "path",
        "rate_limit_policy",
        "request_id",
        "response_bytes",
        "response_headers",
        "route",
        "scope",
        "span",
        "span_id",
        "start",
        "state",
        "status",
        "trace_id",
    )

    def __init__(self, scope: Scope, proxies: ProxyResolver) -> None:
        self.scope = scope
        self.method: str = scope.get("method", "")
        self.path: str = scope["path"]
        self.start = perf_counter()
        self.end = 0.0
        self.status = 0
        self.response_bytes = 0
        self.request_id: str | None = None
        self.route: str | None = None
        self.exception: BaseException | None = None
        self.span: Any = None
        self.trace_id: str | None = None
        self.span_id: str | None = None
        self.rate_limit_policy: str | None = None
        self.response_headers: list[tuple[bytes, bytes]] = []
        self.state: dict[str, Any] = {}
        self._proxies = proxies
        self._client: str | None | bool = False

    @property
    def client(self) -> str | None:
        """The client address, proxy-aware (computed once, on first use)."""
        if self._client is False:
            self._client = self._proxies.client(self.scope)
        return self._client  # type: ignore[return-value]

    @property
    def duration(self) -> float:
        """Seconds from request start to the end of the response body."""
        return (self.end or perf_counter()) - self.start

    def header(self, name: bytes) -> bytes | None:
        """The first request header called ``name`` (lower-case bytes), if any."""
        for key, value in self.scope["headers"]:
            if key == name:
                return value  # type: ignore[no-any-return]
        return None
