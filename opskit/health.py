"""Liveness and readiness: ``/healthz`` answers while the process does; ``/readyz`` runs checks.

Readiness checks are registered process-wide with :func:`add_readiness_check`; each is an async
callable that raises (or returns ``False``) when its dependency is unusable. After
:func:`begin_shutdown`, ``/readyz`` answers 503 at once so load balancers stop sending traffic
while in-flight requests drain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from .component import Component

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = [
    "HealthComponent",
    "add_readiness_check",
    "begin_shutdown",
    "create_component",
    "is_shutting_down",
    "remove_readiness_check",
]

ReadinessCheck = Callable[[], Awaitable[object]]

_checks: dict[str, ReadinessCheck] = {}
_shutting_down = False
_JSON = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]


def add_readiness_check(name: str, check: ReadinessCheck) -> None:
    """Make ``/readyz`` depend on ``check``: an async callable that raises or returns ``False`` when not ready."""
    _checks[name] = check


def remove_readiness_check(name: str) -> None:
    """Forget the readiness check called ``name`` (no error if there is none)."""
    _checks.pop(name, None)


def begin_shutdown() -> None:
    """Mark the process as shutting down: ``/readyz`` answers 503 from now on."""
    global _shutting_down
    _shutting_down = True


def is_shutting_down() -> bool:
    """Whether :func:`begin_shutdown` was called in this process."""
    return _shutting_down


def reset() -> None:
    """Forget every check and the shutdown mark (for tests and a re-forked worker)."""
    global _shutting_down
    _checks.clear()
    _shutting_down = False


async def _run(check: ReadinessCheck, timeout: float) -> str:
    try:
        result = await asyncio.wait_for(check(), timeout)
    except asyncio.TimeoutError:
        return f"fail: timed out after {timeout:g}s"
    except Exception as exc:  # a failing check is an answer, not an error of ours
        return f"fail: {type(exc).__name__}: {exc}"[:200]
    return "fail" if result is False else "ok"


async def readiness(timeout: float) -> tuple[int, dict[str, object]]:
    """Run every check concurrently; the HTTP status and the JSON body ``/readyz`` answers."""
    if _shutting_down:
        return 503, {"status": "shutting_down"}
    names = list(_checks)
    results = await asyncio.gather(*(_run(_checks[n], timeout) for n in names))
    checks = dict(zip(names, results, strict=True))
    failed = [n for n, r in checks.items() if r != "ok"]
    if failed:
        return 503, {"status": "fail", "failed": failed, "checks": checks}
    return 200, {"status": "ok", "checks": checks}


async def _respond(send: Send, status: int, body: dict[str, object], head: bool) -> None:
    payload = orjson.dumps(body)
    headers = [*_JSON, (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else payload})


async def liveness_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    """ASGI app for ``/healthz``."""
    await _respond(send, 200, {"status": "ok"}, scope.get("method") == "HEAD")


def readiness_endpoint(timeout: float) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """ASGI app for ``/readyz`` with checks bounded by ``timeout`` seconds each."""

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        status, body = await readiness(timeout)
        await _respond(send, status, body, scope.get("method") == "HEAD")

    return endpoint


class HealthComponent(Component):
    """Serves ``/healthz`` and ``/readyz`` (paths configurable) ahead of the app."""

    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        self._endpoints: dict[str, ASGIApp] = {
            settings.health_path: liveness_endpoint,
            settings.readiness_path: readiness_endpoint(settings.readiness_timeout),
        }

    def endpoints(self) -> dict[str, ASGIApp]:
        return dict(self._endpoints)


def create_component(runtime: Runtime) -> HealthComponent | None:
    """The health component, unless ``OPSKIT_HEALTH_ENABLED=false``."""
    return HealthComponent(runtime) if runtime.settings.health_enabled else None
