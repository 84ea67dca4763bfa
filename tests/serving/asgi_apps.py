"""Tiny ASGI apps served by gunicorn in the serving tests.

Imported only by the servers the tests start: importing it configures opskit's logging.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from starlette.types import Receive, Scope, Send

import opskit
from tests.serving.processes import STARTED_MARKER


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        else:
            await send({"type": "lifespan.shutdown.complete"})
            return


async def plain(scope: Scope, receive: Receive, send: Send) -> None:
    """``/`` answers ``ok``; ``/slow`` after 2 s; ``/hang`` after 60 s; ``/block`` blocks the loop for 30 s."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["path"] in ("/slow", "/hang"):
        marker = os.environ.get(STARTED_MARKER)
        if marker:
            Path(marker).touch()  # noqa: ASYNC240 (a test app; one tiny file)
        await asyncio.sleep(2 if scope["path"] == "/slow" else 60)
    elif scope["path"] == "/block":
        time.sleep(30)  # noqa: ASYNC251 (the point: a worker whose loop never comes back)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


instrumented = opskit.wrap(plain)
