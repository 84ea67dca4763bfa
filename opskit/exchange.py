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
    Components keep their own per-request data in ``state``.
    """

    # Class-level defaults: a request pays only for the attributes that change.
    end = 0.0
    status = 0
    response_bytes = 0
    request_id: str | None = None
    route: str | None = None
    exception: BaseException | None = None
    span: Any = None
    trace_id: str | None = None
    span_id: str | None = None
    rate_limit_policy: str | None = None
    _client: str | None | bool = False
    _state: dict[str, Any] | None = None

    def __init__(self, scope: Scope, proxies: ProxyResolver) -> None:
        self.scope = scope
        self.method: str = scope.get("method", "")
        self.path: str = scope["path"]
        self.start = perf_counter()
        self.response_headers: list[tuple[bytes, bytes]] = []
        self._proxies = proxies

    @property
    def client(self) -> str | None:
        """The client address, proxy-aware (computed once, on first use)."""
        if self._client is False:
            self._client = self._proxies.client(self.scope)
        return self._client  # type: ignore[return-value]

    @property
    def state(self) -> dict[str, Any]:
        """Free-form per-request data of components."""
        if self._state is None:
            self._state = {}
        return self._state

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
