"""OTLP/HTTP with protobuf bodies: one POST per export, gzip, headers, a deadline, retries.

What the OpenTelemetry specification asks of an OTLP/HTTP exporter: ``Content-Type:
application/x-protobuf``; retry 429, 502, 503 and 504 (and failed connections) with exponential
backoff and jitter, honouring ``Retry-After``, until the export's timeout; any other status is
final. Nothing here logs: the caller counts and logs each failed export by its bounded reason.
"""

from __future__ import annotations

import gzip
import random
import threading
import time
from dataclasses import dataclass

import urllib3

from ..version import VERSION

__all__ = ["FAILURE_REASONS", "RETRYABLE", "ExportResult", "OtlpHttpClient", "failure_reason", "signal_endpoint"]

FAILURE_REASONS = ("timeout", "connection", "http_4xx", "http_5xx", "http_other", "other")
RETRYABLE = frozenset({429, 502, 503, 504})
DEFAULT_ENDPOINT = "http://localhost:4318"
_MAX_BACKOFF = 32.0


def signal_endpoint(signal_url: str, base_url: str, path: str) -> str:
    """The URL of one signal: its own endpoint as given, else the base endpoint with ``path`` appended."""
    if signal_url:
        return signal_url
    return (base_url or DEFAULT_ENDPOINT).rstrip("/") + path


def _named(error: BaseException, *names: str) -> bool:
    # By class name: the transport may be requests, urllib3 or grpc, none of which the caller imports.
    return any(kind.__name__ in names for kind in type(error).__mro__)


def failure_reason(status_code: int | None, error: BaseException | None) -> str:
    """The bounded reason of a failed export: the HTTP status class, else timeout or connection, else other."""
    if status_code is not None:
        klass = status_code // 100
        return f"http_{klass}xx" if klass in (4, 5) else "http_other"
    if error is None:
        return "other"
    # urllib3's NewConnectionError is also a ConnectTimeoutError: a refused connection is no timeout.
    if _named(error, "NewConnectionError", "NameResolutionError"):
        return "connection"
    if isinstance(error, TimeoutError) or _named(error, "Timeout", "TimeoutError", "ReadTimeoutError"):
        return "timeout"
    if isinstance(error, ConnectionError) or _named(error, "ConnectionError", "ProtocolError"):
        return "connection"
    return "other"


@dataclass(frozen=True, slots=True)
class ExportResult:
    """The outcome of one export: ``ok``, else a reason from :data:`FAILURE_REASONS` and a short detail."""

    ok: bool
    reason: str | None = None
    detail: str = ""
    attempts: int = 1


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False


def _retry_after(value: str | None) -> float | None:
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


class OtlpHttpClient:
    """POSTs serialized export requests to one OTLP/HTTP endpoint, over one kept-alive connection.

    ``timeout`` (seconds) bounds a whole export, retries and backoff included.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
        compression: str = "none",
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.gzip = compression == "gzip"
        self._headers = {
            **(headers or {}),
            "Content-Type": "application/x-protobuf",
            "User-Agent": f"opskit/{VERSION}",
        }
        if self.gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._pool = urllib3.PoolManager(num_pools=1, maxsize=1, retries=False)

    def export(self, body: bytes, stop: threading.Event | None = None) -> ExportResult:
        """Send ``body`` (a serialized ``Export*ServiceRequest``); retried within the timeout.

        ``stop``, once set, ends the waiting between retries (shutdown): the last result is returned.
        """
        data = gzip.compress(body, compresslevel=5, mtime=0) if self.gzip else body
        deadline = time.monotonic() + self.timeout
        backoff = 1.0
        attempt = 0
        last: ExportResult | None = None
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return last or ExportResult(False, "timeout", "deadline reached", attempt - 1)
            status: int | None = None
            wait: float | None = None
            try:
                response = self._pool.request(
                    "POST",
                    self.endpoint,
                    body=data,
                    headers=self._headers,
                    timeout=urllib3.Timeout(total=remaining),
                    retries=False,
                    redirect=False,
                )
            except Exception as error:  # any transport failure is one export's failure, never the caller's
                result = ExportResult(False, failure_reason(None, error), type(error).__name__, attempt)
                if last is not None and result.reason == "timeout":
                    return last  # the deadline cut a retry short: the failure is what was answered before
                retry = result.reason in ("connection", "timeout")
            else:
                status = response.status
                if 200 <= status < 300:
                    return ExportResult(True, attempts=attempt)
                result = ExportResult(False, failure_reason(status, None), f"HTTP {status}", attempt)
                retry = status in RETRYABLE
                wait = _retry_after(response.headers.get("Retry-After"))
            if not retry:
                return result
            last = result
            delay = wait if wait is not None else backoff * (0.5 + random.random() / 2)
            backoff = min(backoff * 2, _MAX_BACKOFF)
            if delay >= deadline - time.monotonic() or (stop.wait(delay) if stop is not None else _sleep(delay)):
                return result

    def close(self) -> None:
        """Close the kept-alive connection."""
        self._pool.clear()
