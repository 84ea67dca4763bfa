"""A small FastAPI app for the tracing tests; ``create(**overrides)`` instruments it with opskit."""

from __future__ import annotations

import os
from typing import Any

import httpx
import redis.asyncio
from fastapi import BackgroundTasks, FastAPI, WebSocket
from opentelemetry import baggage, trace

import opskit
import opskit.tracing

log = opskit.get_logger("tests.tracing")


def _in_background(item_id: int) -> None:
    log.info("background work", item_id=item_id)


def create(**overrides: Any) -> FastAPI:
    """The app, instrumented with ``overrides`` over the environment.

    The runtime-health feature is off unless asked for: its background-task spans would join the
    spans these tests count (tests/loop shows them).
    """
    overrides.setdefault("runtime_enabled", False)
    app = FastAPI()
    tracer = opskit.tracing.get_tracer("tests")  # as user code does at import time

    @app.get("/items/{item_id}")
    async def item(item_id: int, tasks: BackgroundTasks) -> dict[str, Any]:
        log.info("in endpoint", item_id=item_id)
        tasks.add_task(_in_background, item_id)
        context = trace.get_current_span().get_span_context()
        return {"item_id": item_id, "trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}

    @app.get("/child")
    async def child() -> dict[str, str]:
        with tracer.start_as_current_span("child work") as span:
            span.set_attribute("work.size", 3)
        trace.get_current_span().set_attribute("app.user", "u-1")
        return {"ok": "yes"}

    @app.get("/pid")
    async def pid() -> dict[str, int]:
        trace.get_current_span().set_attribute("process.pid", os.getpid())
        return {"pid": os.getpid()}

    @app.get("/outbound")
    async def outbound(http_port: int, redis_url: str) -> dict[str, int]:
        async with httpx.AsyncClient() as client:
            status = (await client.get(f"http://127.0.0.1:{http_port}/ping")).status_code
        connection = redis.asyncio.from_url(redis_url)
        try:
            await connection.ping()
        finally:
            await connection.aclose()
        return {"status": status}

    @app.get("/baggage")
    async def baggage_members() -> dict[str, object]:
        return dict(baggage.get_all())

    @app.get("/call")
    async def call(port: int) -> dict[str, int]:
        async with httpx.AsyncClient() as client:
            return {"status": (await client.get(f"http://127.0.0.1:{port}/echo")).status_code}

    @app.websocket("/ws/{room}")
    async def chat(websocket: WebSocket, room: str) -> None:
        if room == "closed":
            await websocket.close()  # refused before the handshake completes: 403
            return
        await websocket.accept()
        context = trace.get_current_span().get_span_context()
        await websocket.send_json({"room": room, "trace_id": f"{context.trace_id:032x}"})
        await websocket.receive_text()
        await websocket.close()

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaput")

    @app.get("/static/{name}")
    async def static(name: str) -> dict[str, str]:
        return {"name": name}

    return opskit.instrument(app, **overrides)
