"""Request IDs: accept a safe incoming ID or generate one (UUID4 hex or UUIDv7), and echo it."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from contextvars import Token
from typing import TYPE_CHECKING, Literal

from starlette.types import Scope

from .component import Component
from .context import _request_id
from .exchange import Exchange
from .logging import get_logger
from .throttle import ThrottledLog

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["RequestIdComponent", "RequestIdPolicy", "create_component", "escape_for_log", "uuid4_hex", "uuid7_hex"]

_urandom = os.urandom
_SAFE = re.compile(rb"[A-Za-z0-9._:\-]+")
_POOL_SIZE = 256

# Ready-made UUID4s: one getrandom() call and a few C calls per 256 IDs instead of per request.
# list.pop() is atomic under the GIL, so threads never share an ID; a forked child starts
# with an empty pool, so workers never share one either.
_uuid4_pool: list[str] = []
os.register_at_fork(after_in_child=_uuid4_pool.clear)


# Version 4 and the RFC 4122 variant, set on every ID of a batch at once by bytes.translate.
_VERSION_4 = bytes((b & 0x0F) | 0x40 for b in range(256))
_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))


def _refill_uuid4_pool() -> None:
    raw = bytearray(_urandom(16 * _POOL_SIZE))
    raw[6::16] = raw[6::16].translate(_VERSION_4)
    raw[8::16] = raw[8::16].translate(_VARIANT)
    _uuid4_pool.extend(raw.hex(" ", 16).split(" "))


def uuid4_hex() -> str:
    """A random UUID version 4 as 32 hex digits (faster than ``uuid.uuid4().hex``).

    Drawn from the operating system's CSPRNG in batches, so IDs stay unpredictable.
    """
    try:
        return _uuid4_pool.pop()
    except IndexError:
        _refill_uuid4_pool()
        return _uuid4_pool.pop()


def uuid7_hex() -> str:
    """A UUID version 7 (millisecond Unix time, then random bits) as 32 hex digits.

    Sortable by creation time, which keeps database indexes and log searches happy.
    """
    b = bytearray((time.time_ns() // 1_000_000).to_bytes(6, "big") + _urandom(10))
    b[6] = (b[6] & 0x0F) | 0x70
    b[8] = (b[8] & 0x3F) | 0x80
    return b.hex()


Rejection = Literal["empty", "too_long", "bad_charset"]


class RequestIdPolicy:
    """Decides the ID of each request from its raw incoming header value."""

    __slots__ = ("generate", "max_length", "trust_incoming")

    def __init__(
        self, *, format: Literal["uuid4", "uuid7"] = "uuid4", max_length: int = 128, trust_incoming: bool = True
    ) -> None:
        self.generate: Callable[[], str] = uuid7_hex if format == "uuid7" else uuid4_hex
        self.max_length = max_length
        self.trust_incoming = trust_incoming

    def check(self, raw: bytes) -> Rejection | None:
        """Why ``raw`` cannot be used as an ID, or ``None`` if it can."""
        if not raw:
            return "empty"
        if len(raw) > self.max_length:
            return "too_long"
        if _SAFE.fullmatch(raw) is None:
            return "bad_charset"
        return None


def escape_for_log(raw: bytes, limit: int = 64) -> str:
    """A printable, bounded rendering of an untrusted value (never the raw bytes)."""
    text = raw[:limit].decode("ascii", "backslashreplace")
    text = text.encode("unicode_escape").decode("ascii")
    return text + ("..." if len(raw) > limit else "")


class RequestIdComponent(Component):
    """Gives every request and websocket its ID: in the context (:func:`opskit.request_id`), on
    ``ex.request_id`` and in the response header. Runs first, so every other feature sees the ID.

    A refused incoming ID is logged escaped, at most once per reason per
    ``OPSKIT_REQUEST_ID_LOG_INTERVAL`` seconds with the count of those held back: a hostile
    client cannot turn its requests into log lines.
    """

    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        self.header_name = settings.request_id_header
        self.header = settings.request_id_header.lower().encode("latin-1")
        self.policy = RequestIdPolicy(
            format=settings.request_id_format,
            max_length=settings.request_id_max_length,
            trust_incoming=settings.request_id_trust_incoming,
        )
        self._rejections = ThrottledLog(get_logger("opskit"), settings.request_id_log_interval)

    def bind(self, scope: Scope) -> tuple[str, Token[str | None]]:
        """The request's ID (the incoming one if safe, else a new one), set in the context: (ID, token).

        A refused incoming ID is logged once the new one is set, so the warning carries it.
        """
        policy = self.policy
        rejected: tuple[Rejection, bytes] | None = None
        rid = None
        if policy.trust_incoming:
            header = self.header
            for name, value in scope.get("headers", ()):
                if name == header:
                    reason = policy.check(value)
                    if reason is None:
                        rid = value.decode("ascii")
                    else:
                        rejected = (reason, value)
                    break
        if rid is None:
            rid = policy.generate()
        token = _request_id.set(rid)
        if rejected is not None:
            reason, value = rejected
            self._rejections.warning(
                reason,
                "invalid request id replaced",
                header=self.header_name,
                rejected=escape_for_log(value),
                path=str(scope.get("path", ""))[:1024],
            )
        return rid, token

    def request_started(self, ex: Exchange) -> None:
        rid, token = self.bind(ex.scope)
        ex.request_id = rid
        ex.response_headers.append((self.header, rid.encode("ascii")))
        ex.state[RequestIdComponent] = token

    def request_closed(self, ex: Exchange) -> None:
        _request_id.reset(ex.state.pop(RequestIdComponent))

    websocket_started = request_started
    websocket_closed = request_closed


def create_component(runtime: Runtime) -> RequestIdComponent | None:
    """The request-ID component, unless ``OPSKIT_REQUEST_ID_ENABLED=false``."""
    return RequestIdComponent(runtime) if runtime.settings.request_id_enabled else None
