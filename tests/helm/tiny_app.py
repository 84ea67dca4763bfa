"""The smallest ASGI app, for starting `opskit serve` with the chart's environment."""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def root() -> dict[str, str]:
    return {"status": "ok"}
