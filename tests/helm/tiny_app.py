"""The smallest instrumented app, for starting `opskit serve` with the chart's environment."""

from __future__ import annotations

from fastapi import FastAPI

import opskit

app = FastAPI()
opskit.instrument(app)


@app.get("/")
async def root() -> dict[str, str]:
    return {"status": "ok"}
