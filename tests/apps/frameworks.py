"""The same small service in other ASGI frameworks, wrapped by opskit, for real servers.

``litestar_app`` (Litestar's router names its template in ``scope["path_template"]``),
``starlette_app`` (plain Starlette under ``opskit.wrap()``) and ``fastapi_app`` (FastAPI with a
mounted FastAPI sub-app, and a streamed ``/stream``). Each serves ``GET /items/{item_id}`` and a
websocket ``/ws/{room}`` that echoes until it receives ``bye``.
"""

from __future__ import annotations

from typing import Any, cast

from fastapi import FastAPI
from fastapi import WebSocket as FastAPIWebSocket
from fastapi.responses import StreamingResponse
from litestar import Litestar, get, websocket
from litestar.connection import WebSocket as LitestarWebSocket
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp
from starlette.websockets import WebSocket as StarletteWebSocket

import opskit
from tests.apps.streaming import two_parts


@get("/items/{item_id:int}")
async def litestar_item(item_id: int) -> dict[str, int]:
    return {"item_id": item_id}


@websocket("/ws/{room:str}")
async def litestar_echo(socket: LitestarWebSocket[Any, Any, Any], room: str) -> None:
    await socket.accept()
    while (text := await socket.receive_text()) != "bye":
        await socket.send_text(f"{room}:{text}")
    await socket.close()


# Litestar types its ASGI interface with its own TypedDicts: the same protocol, other names.
litestar_app = opskit.wrap(cast(ASGIApp, Litestar([litestar_item, litestar_echo])))


async def starlette_item(request: Request) -> JSONResponse:
    return JSONResponse({"item_id": int(request.path_params["item_id"])})


async def starlette_echo(socket: StarletteWebSocket) -> None:
    await socket.accept()
    while (text := await socket.receive_text()) != "bye":
        await socket.send_text(f"{socket.path_params['room']}:{text}")
    await socket.close()


starlette_app = opskit.wrap(
    Starlette(routes=[Route("/items/{item_id:int}", starlette_item), WebSocketRoute("/ws/{room}", starlette_echo)])
)

fastapi_app = FastAPI()
opskit.instrument(fastapi_app)
sub_app = FastAPI()


@fastapi_app.get("/items/{item_id}")
async def fastapi_item(item_id: int) -> dict[str, int]:
    return {"item_id": item_id}


@fastapi_app.get("/stream")
async def stream() -> StreamingResponse:
    return two_parts()


@sub_app.get("/items/{item_id}")
async def sub_item(item_id: int) -> dict[str, int]:
    return {"item_id": item_id}


@sub_app.websocket("/ws/{room}")
async def sub_echo(socket: FastAPIWebSocket, room: str) -> None:
    await socket.accept()
    while (text := await socket.receive_text()) != "bye":
        await socket.send_text(f"{room}:{text}")
    await socket.close()


fastapi_app.mount("/v2", sub_app)
