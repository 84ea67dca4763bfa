"""A FastAPI app using what real services use: streaming, files, background tasks, websockets,
mounted sub-apps, routers with prefixes, custom exception handlers, sync endpoints.

``create(instrumented)`` builds it with or without opskit so tests can compare the two.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, BackgroundTasks, FastAPI, HTTPException, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.applications import Starlette
from starlette.routing import Route

import opskit

log = opskit.get_logger("tests.app")
seen: dict[str, Any] = {}


class TeapotError(Exception):
    pass


def _file() -> str:
    # Fixed content and mtime: FileResponse's ETag and Last-Modified derive from them, and
    # tests compare the responses of two apps.
    path = os.path.join(tempfile.gettempdir(), f"opskit-test-file-{os.getpid()}.txt")
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write("file body\n" * 100)
        os.utime(path, (1_700_000_000, 1_700_000_000))
    return path


async def _sub_hello(request: Any) -> PlainTextResponse:
    return PlainTextResponse(f"sub {request.path_params['name']}")


def create(instrumented: bool = True, **overrides: Any) -> FastAPI:
    app = FastAPI()
    if instrumented:
        opskit.instrument(app, **overrides)
    file_path = _file()
    router = APIRouter(prefix="/api/v1")

    @router.get("/users/{user_id}")
    async def user(user_id: int) -> dict[str, Any]:
        return {"user": user_id}

    app.include_router(router)

    @app.exception_handler(TeapotError)
    async def teapot(request: Request, exc: TeapotError) -> JSONResponse:
        seen["handler_request_id"] = opskit.request_id()
        return JSONResponse({"detail": "teapot"}, status_code=418, headers={"x-custom": "yes"})

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, Any]:
        log.info("item requested", item_id=item_id)
        return {"item_id": item_id, "request_id": opskit.request_id()}

    @app.get("/sync")
    def sync_endpoint() -> dict[str, Any]:
        log.info("sync endpoint")
        return {"request_id": opskit.request_id()}

    @app.get("/background")
    async def background(tasks: BackgroundTasks) -> dict[str, str]:
        def job() -> None:
            seen["background_request_id"] = opskit.request_id()
            log.info("background job ran")

        tasks.add_task(job)
        return {"status": "queued"}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(5):
                await asyncio.sleep(0)
                yield f"chunk {i}\n".encode()

        return StreamingResponse(chunks(), media_type="text/plain", headers={"x-stream": "1"})

    @app.get("/file")
    async def file() -> FileResponse:
        return FileResponse(file_path, media_type="text/plain")

    @app.get("/teapot")
    async def raise_teapot() -> None:
        raise TeapotError()

    @app.get("/http-error")
    async def http_error() -> None:
        raise HTTPException(status_code=409, detail="conflict", headers={"x-reason": "dup"})

    @app.get("/boom")
    async def boom() -> None:
        log.info("about to fail")
        raise RuntimeError("kaboom")

    @app.post("/echo")
    async def echo(request: Request) -> PlainTextResponse:
        return PlainTextResponse(await request.body())

    @app.get("/slow")
    async def slow(seconds: float = 0.2) -> dict[str, float]:
        await asyncio.sleep(seconds)
        return {"slept": seconds}

    @app.get("/long-stream")
    async def long_stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(50):  # 50 x 1 KiB, 20 ms apart
                await asyncio.sleep(0.02)
                yield b"x" * 1023 + b"\n"

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/long-poll")
    async def long_poll(request: Request) -> dict[str, bool]:
        for _ in range(100):
            if await request.is_disconnected():
                break
            await asyncio.sleep(0.02)
        return {"done": True}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        text = await websocket.receive_text()
        await websocket.send_text(f"echo {text} {opskit.request_id() is not None}")
        await websocket.close()

    sub = Starlette(routes=[Route("/hello/{name}", _sub_hello)])
    app.mount("/sub", sub)
    return app
