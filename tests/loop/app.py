"""The runtime-health test app, instrumented from the environment, for real servers (uvicorn, gunicorn)."""

from __future__ import annotations

import asyncio
import time

from fastapi import BackgroundTasks, FastAPI

import opskit

app = FastAPI()
opskit.instrument(app)


@app.get("/block")
async def block(seconds: float = 0.3) -> dict[str, float]:
    time.sleep(seconds)  # noqa: ASYNC251 (the point: a blocking call in an async route)
    return {"blocked": seconds}


@app.get("/fast")
async def fast() -> dict[str, bool]:
    return {"fast": True}


@app.get("/sync")
def sync(seconds: float = 1.0) -> dict[str, float]:
    time.sleep(seconds)
    return {"slept": seconds}


def fail_in_background(item: int) -> None:
    raise ValueError(f"item {item} cannot be indexed")


async def slow_in_background() -> None:
    await asyncio.sleep(0.2)


@app.get("/background")
async def background(tasks: BackgroundTasks) -> dict[str, bool]:
    tasks.add_task(slow_in_background)
    tasks.add_task(fail_in_background, 7)
    return {"queued": True}
