"""Header capture with the OpenTelemetry names: which request and response headers signals record.

``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST`` / ``..._RESPONSE`` list header names
or regular expressions (matched whole, case-insensitively); the values of headers matching
``..._SANITIZE_FIELDS`` or ``OPSKIT_LOG_REDACT_KEYS`` are recorded as ``[REDACTED]``. Each
captured header becomes a tuple of its values (a repeated header keeps every value), each value
cut to :data:`~opskit.fields.MAX_FIELD` characters, at most :data:`MAX_VALUES` of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .fields import MAX_FIELD, REDACTED

if TYPE_CHECKING:
    from .exchange import Exchange
    from .runtime import Runtime

__all__ = ["MAX_VALUES", "HeaderCapture", "capture", "request_headers"]

MAX_VALUES = 16
_SERVICE = "opskit.headers"
Captured = dict[str, tuple[str, ...]]


def _matcher(patterns: Iterable[str]) -> re.Pattern[str] | None:
    patterns = tuple(patterns)
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE) if patterns else None


class HeaderCapture:
    """Decides, once per header name, whether it is captured and whether its value is redacted."""

    __slots__ = ("_decided", "_redact", "_redact_keys", "_request", "_response")

    def __init__(
        self, request: Iterable[str], response: Iterable[str], sanitize: Iterable[str], redact_keys: Iterable[str]
    ) -> None:
        self._request = _matcher(request)
        self._response = _matcher(response)
        self._redact = _matcher(sanitize)
        self._redact_keys = frozenset(k.lower() for k in redact_keys)
        self._decided: dict[tuple[bool, bytes], tuple[str, bool] | None] = {}

    @property
    def requests(self) -> bool:
        """Whether any request header is captured."""
        return self._request is not None

    @property
    def responses(self) -> bool:
        """Whether any response header is captured."""
        return self._response is not None

    def _decide(self, response: bool, raw: bytes) -> tuple[str, bool] | None:
        key = (response, raw)
        try:
            return self._decided[key]
        except KeyError:
            pass
        matcher = self._response if response else self._request
        name = raw.decode("latin-1").lower()
        decision = None
        if matcher is not None and len(name) <= 128 and matcher.fullmatch(name):
            redacted = name in self._redact_keys or (self._redact is not None and bool(self._redact.fullmatch(name)))
            decision = (name, redacted)
        if len(self._decided) < 10_000:  # hostile clients send endless distinct names
            self._decided[key] = decision
        return decision

    def pick(self, headers: Iterable[tuple[bytes, bytes]], response: bool = False) -> Captured:
        """The captured headers among ``headers`` (ASGI pairs), by lower-case name."""
        out: dict[str, list[str]] = {}
        for raw_name, raw_value in headers:
            decision = self._decide(response, raw_name)
            if decision is None:
                continue
            name, redacted = decision
            values = out.setdefault(name, [])
            if len(values) < MAX_VALUES:
                values.append(REDACTED if redacted else raw_value[:MAX_FIELD].decode("latin-1"))
        return {name: tuple(values) for name, values in out.items()}


def _build(runtime: Runtime) -> HeaderCapture:
    s = runtime.settings
    return HeaderCapture(
        s.capture_headers_server_request,
        s.capture_headers_server_response,
        s.capture_headers_sanitize_fields,
        s.log_redact_keys,
    )


def capture(runtime: Runtime) -> HeaderCapture:
    """The runtime's header capture (built once)."""
    found: HeaderCapture = runtime.service(_SERVICE, _build)
    return found


def request_headers(ex: Exchange) -> Captured:
    """The captured request headers of ``ex``, picked once per request."""
    found: Captured | None = ex.state.get(_SERVICE)
    if found is None:
        found = ex.state[_SERVICE] = capture(ex.runtime).pick(ex.scope.get("headers", ()))
    return found
