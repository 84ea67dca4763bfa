"""OTLP transports: one client per signal, over OTLP/HTTP (protobuf bodies) or gRPC, with one retry policy.

What the OpenTelemetry specification asks of an OTLP exporter: over HTTP, ``Content-Type:
application/x-protobuf``, retry 429, 502, 503 and 504 (and failed connections), honouring
``Retry-After``; over gRPC, retry the transient status codes (``UNAVAILABLE``...); both with
exponential backoff and jitter until the export's timeout; any other answer is final. Nothing
here logs: the caller counts and logs each failed export by its bounded reason.

:func:`otlp_client` builds a signal's client from its settings (``OTEL_EXPORTER_OTLP_<SIGNAL>_*``
over ``OTEL_EXPORTER_OTLP_*``): traces, metrics and logs all go through it.
"""

from __future__ import annotations

import gzip
import importlib.util
import random
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import urllib3

from ..settings import ConfigError
from ..settings.otlp_export import Signal, otlp_export
from ..version import VERSION

if TYPE_CHECKING:
    from ..settings import Settings

__all__ = [
    "FAILURE_REASONS",
    "RETRYABLE",
    "ExportResult",
    "OtlpClient",
    "OtlpHttpClient",
    "Signal",
    "check_protocol",
    "failure_reason",
    "grpc_available",
    "otlp_client",
    "signal_endpoint",
]

FAILURE_REASONS = ("timeout", "connection", "http_4xx", "http_5xx", "http_other", "other")
RETRYABLE = frozenset({429, 502, 503, 504})
DEFAULT_ENDPOINT = "http://localhost:4318"
DEFAULT_GRPC_ENDPOINT = "http://localhost:4317"
_MAX_BACKOFF = 32.0


def signal_endpoint(signal_url: str, base_url: str, path: str) -> str:
    """The URL of one signal over HTTP: its own endpoint as given, else the base endpoint with ``path`` appended."""
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


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try of an export: its result, whether to try again, and the collector's requested wait."""

    result: ExportResult
    retry: bool = False
    wait: float | None = None


class OtlpClient(Protocol):
    """What an exporter needs of a transport: send one serialized request (retried), and close."""

    endpoint: str

    def export(self, body: bytes, stop: threading.Event | None = None) -> ExportResult: ...

    def close(self) -> None: ...


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False


def _retry_after(value: str | None) -> float | None:
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


class RetryingClient:
    """The retry loop shared by both transports: :meth:`_attempt` sends once within ``remaining`` seconds.

    ``timeout`` (seconds) bounds a whole export, retries and backoff included.
    """

    endpoint: str
    timeout: float

    def _prepare(self, body: bytes) -> bytes:
        return body

    def _attempt(self, data: bytes, remaining: float, number: int) -> Attempt:
        raise NotImplementedError

    def export(self, body: bytes, stop: threading.Event | None = None) -> ExportResult:
        """Send ``body`` (a serialized ``Export*ServiceRequest``); retried within the timeout.

        ``stop``, once set, ends the waiting between retries (shutdown): the last result is returned.
        """
        data = self._prepare(body)
        deadline = time.monotonic() + self.timeout
        backoff = 1.0
        attempt = 0
        last: ExportResult | None = None
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return last or ExportResult(False, "timeout", "deadline reached", attempt - 1)
            tried = self._attempt(data, remaining, attempt)
            result = tried.result
            if result.ok:
                return result
            if last is not None and result.reason == "timeout":
                return last  # the deadline cut a retry short: the failure is what was answered before
            if not tried.retry:
                return result
            last = result
            delay = tried.wait if tried.wait is not None else backoff * (0.5 + random.random() / 2)
            backoff = min(backoff * 2, _MAX_BACKOFF)
            if delay >= deadline - time.monotonic() or (stop.wait(delay) if stop is not None else _sleep(delay)):
                return result

    def close(self) -> None:
        """Release the connection."""


class OtlpHttpClient(RetryingClient):
    """POSTs serialized export requests to one OTLP/HTTP endpoint, over one kept-alive connection."""

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

    def _prepare(self, body: bytes) -> bytes:
        return gzip.compress(body, compresslevel=5, mtime=0) if self.gzip else body

    def _attempt(self, data: bytes, remaining: float, number: int) -> Attempt:
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
            result = ExportResult(False, failure_reason(None, error), type(error).__name__, number)
            return Attempt(result, retry=result.reason in ("connection", "timeout"))
        status = response.status
        if 200 <= status < 300:
            return Attempt(ExportResult(True, attempts=number))
        result = ExportResult(False, failure_reason(status, None), f"HTTP {status}", number)
        return Attempt(result, retry=status in RETRYABLE, wait=_retry_after(response.headers.get("Retry-After")))

    def close(self) -> None:
        """Close the kept-alive connection."""
        self._pool.clear()


def grpc_available() -> bool:
    """Whether grpcio is installed (``pip install 'opskit-asgi[grpc]'``): what OTLP over gRPC needs."""
    return importlib.util.find_spec("grpc") is not None


def otlp_client(settings: Settings, signal: Signal) -> OtlpClient:
    """The client of one signal, from its ``OTEL_EXPORTER_OTLP_<SIGNAL>_*`` settings (the generic ones as fallback).

    Over HTTP the base endpoint gets ``/v1/<signal>`` appended; over gRPC it is used as given.
    """
    export = otlp_export(settings, signal)
    if export.protocol == "grpc":
        from .grpc_client import OtlpGrpcClient

        return OtlpGrpcClient(
            export.endpoint or settings.otlp_endpoint or DEFAULT_GRPC_ENDPOINT,
            signal,
            headers=export.headers,
            timeout=export.timeout,
            compression=export.compression,
        )
    return OtlpHttpClient(
        signal_endpoint(export.endpoint, settings.otlp_endpoint, f"/v1/{signal}"),
        headers=export.headers,
        timeout=export.timeout,
        compression=export.compression,
    )


def check_protocol(settings: Settings, signal: Signal) -> None:
    """Fail at startup, naming the variable, on a protocol this installation cannot send ``signal`` with."""
    protocol = otlp_export(settings, signal).protocol
    variable = f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL"
    if protocol == "grpc" and not grpc_available():
        raise ConfigError(
            f"{variable}='grpc' needs the gRPC exporter: pip install 'opskit-asgi[grpc]' "
            "(or use the default http/protobuf)"
        )
