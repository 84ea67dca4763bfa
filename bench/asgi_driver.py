"""Drive an ASGI app in-process, without a server: the micro-benchmarks' common loop.

Microseconds are CPU time of this process (``time.process_time``): other processes on a busy
machine distort it far less than wall-clock time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

__all__ = ["drive", "http_scope"]

_BODY = {"type": "http.request", "body": b"", "more_body": False}


def http_scope(
    path: str = "/items/1",
    headers: Sequence[tuple[bytes, bytes]] = ((b"host", b"bench"),),
    client: tuple[str, int] = ("127.0.0.1", 5000),
) -> dict[str, Any]:
    """A GET request's scope, as uvicorn builds it."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": list(headers),
        "client": client,
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _receive() -> dict[str, Any]:
    return _BODY


async def _send(message: Any) -> None:
    return None


async def drive(app: Any, n: int, scope: dict[str, Any] | None = None, warmup: int = 0) -> float:
    """CPU microseconds per request of ``n`` sequential requests (after ``warmup`` untimed ones)."""
    base = scope or http_scope()
    for _ in range(warmup):
        await app(dict(base), _receive, _send)
    start = time.process_time()
    for _ in range(n):
        await app(dict(base), _receive, _send)
    return (time.process_time() - start) / n * 1e6
