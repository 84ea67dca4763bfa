"""Small FastAPI apps for the rate-limit tests."""

from __future__ import annotations

import os
from typing import Any

from fastapi import Depends, FastAPI, Request

import opskit
from opskit.ratelimit import RateLimit


def api_key(request: Request) -> str | None:
    return request.headers.get("x-tenant")


def create(**settings: Any) -> FastAPI:
    """An app with plain routes, route limits (one, two, keyed by a callable) and opskit installed."""
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    @app.get("/whoami")
    async def whoami() -> dict[str, int]:
        return {"pid": os.getpid()}

    @app.get("/public/info")
    async def public() -> dict[str, str]:
        return {"public": "yes"}

    @app.get("/search", dependencies=[Depends(RateLimit("2/minute"))])
    async def search() -> dict[str, str]:
        return {"search": "ok"}

    @app.get("/report", dependencies=[Depends(RateLimit("100/minute")), Depends(RateLimit("2/minute", name="tight"))])
    async def report() -> dict[str, str]:
        return {"report": "ok"}

    @app.get("/tenant", dependencies=[Depends(RateLimit("1/minute", key=api_key))])
    async def tenant() -> dict[str, str]:
        return {"tenant": "ok"}

    opskit.instrument(app, **settings)
    return app


def served() -> FastAPI:
    """The app a real server runs (``uvicorn --factory``), configured from the environment."""
    return create()
