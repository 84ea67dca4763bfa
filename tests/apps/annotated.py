"""An app that annotates its requests from everywhere ``opskit.annotate()`` may be called, for real servers.

Configured from the environment. ``X-Tenant`` is annotated by a sync dependency (run in the thread
pool), ``plan`` by an async one, ``layer`` by a ``BaseHTTPMiddleware`` under opskit and ``job`` by a
BackgroundTask; every route writes a log line after its dependencies ran.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import BackgroundTasks, Depends, FastAPI, Header, Request, Response, WebSocket
from fastapi.responses import StreamingResponse
from starlette.middleware.base import BaseHTTPMiddleware

import opskit
from tests.apps.streaming import two_parts

log = opskit.get_logger("tests.annotated")


def tenant(x_tenant: str | None = Header(None)) -> str | None:
    if x_tenant is not None:
        opskit.annotate(tenant=x_tenant)
    return x_tenant


async def plan() -> None:
    opskit.annotate(plan="pro")


async def layer(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    opskit.annotate(layer="inner-middleware")
    return await call_next(request)


app = FastAPI(dependencies=[Depends(tenant), Depends(plan)])
app.add_middleware(BaseHTTPMiddleware, dispatch=layer)
opskit.instrument(app)


@app.get("/items/{item_id}")
async def item(item_id: int) -> dict[str, int]:
    log.info("handled", item_id=item_id)
    return {"item_id": item_id}


@app.get("/fail/{item_id}")
async def fail(item_id: int) -> Response:
    log.info("failing", item_id=item_id)
    return Response("no", status_code=503)


@app.get("/slow/{item_id}")
async def slow(item_id: int) -> dict[str, int]:
    await asyncio.sleep(0.06)
    return {"item_id": item_id}


@app.get("/hostile")
async def hostile(request: Request) -> dict[str, bool]:
    value = request.query_params.get("value", "")
    opskit.annotate(note=value * 50, password=value, status="spoofed", shape=object())
    log.info("hostile handled")
    return {"ok": True}


def job(n: int) -> None:
    opskit.annotate(job=f"job-{n}")
    log.info("background done")


@app.get("/background/{n}")
async def background(n: int, tasks: BackgroundTasks) -> dict[str, int]:
    tasks.add_task(job, n)
    return {"n": n}


@app.get("/stream")
async def stream() -> StreamingResponse:
    return two_parts()


@app.websocket("/ws/{room}")
async def echo(websocket: WebSocket, room: str) -> None:
    await websocket.accept()
    while True:
        text = await websocket.receive_text()
        if text == "bye":
            await websocket.close()
            return
        await websocket.send_text(f"{room}:{text}")
