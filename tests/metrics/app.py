"""The app the metrics tests serve for real (uvicorn, gunicorn) or call in-process.

A stand-in for tracing sets ``ex.trace_id`` from the ``x-test-trace-id`` request header, so
the tests know which trace IDs must come back as exemplars.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any

import prometheus_client
from fastapi import BackgroundTasks, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from opskit.component import Component
from opskit.exchange import Exchange
from opskit.metrics.component import MetricsComponent, metrics_component
from opskit.metrics.registry import Registry
from opskit.middleware import OpskitMiddleware
from opskit.runtime import Runtime
from opskit.settings import Settings

_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
# A metric kept by prometheus_client itself, as the rate limiter's or an app's own would be.
spread_calls = prometheus_client.Counter("opskit_test_spread_calls_total", "Calls of /spread (prometheus_client).")
release = asyncio.Event()


class TraceIdsFromHeader(Component):
    """Plays the part of tracing: a sampled request gets the trace ID the client chose."""

    def request_started(self, ex: Exchange) -> None:
        value = ex.header(b"x-test-trace-id")
        if value is not None and _TRACE_ID.match(value.decode("latin-1")):
            ex.trace_id = value.decode("ascii")


async def _sub(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"sub {request.path_params['name']}")


def create_app() -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, Any]:
        return {"item": item_id, "pid": os.getpid()}

    @app.get("/spread/{n}")
    async def spread(n: int) -> dict[str, Any]:
        await asyncio.sleep(0.005)  # lets concurrent requests reach other workers
        spread_calls.inc()
        return {"pid": os.getpid()}

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    @app.get("/boom")
    async def boom() -> None:
        raise LookupError("boom")

    @app.get("/hold")
    async def hold() -> dict[str, bool]:
        await release.wait()
        return {"released": True}

    @app.get("/background")
    async def background(tasks: BackgroundTasks) -> dict[str, bool]:
        tasks.add_task(asyncio.sleep, 0.3)
        return {"queued": True}

    app.mount("/sub", Starlette(routes=[Route("/hello/{name}", _sub)]))
    return app


def wrapped(settings: Settings, registry: Registry | None = None) -> tuple[OpskitMiddleware, MetricsComponent]:
    """The test app behind opskit's middleware with metrics (and the trace ID stand-in)."""
    app = create_app()
    runtime = Runtime(settings, app)
    metrics = metrics_component(runtime, registry)
    middleware = OpskitMiddleware(app, runtime, [TraceIdsFromHeader(), metrics])
    return middleware, metrics
