"""Tiny ASGI apps served by gunicorn in the serving tests (no opskit instrumentation)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

Scope = dict[str, Any]


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        else:
            await send({"type": "lifespan.shutdown.complete"})
            return


async def plain(scope: Scope, receive: Any, send: Any) -> None:
    """``/`` answers ``ok``; ``/slow`` after 2 s; ``/block`` blocks the event loop for 30 s."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(2)
    elif scope["path"] == "/block":
        time.sleep(30)  # noqa: ASYNC251 (the point: a worker whose loop never comes back)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})
