"""A small FastAPI service instrumented with opskit: `make demo` serves it on 2 gunicorn workers.

Try it::

    curl -i localhost:8000/items/1                  # a route with a path parameter
    curl -i -X POST localhost:8000/items -H 'content-type: application/json' -d '{"name": "lamp"}'
    curl -i localhost:8000/slow?seconds=1.5          # a slow endpoint (latency histogram)
    curl -i localhost:8000/error                     # an unhandled exception: 500 with a request ID
    curl -i localhost:8000/blocking                  # blocks the event loop: a warning names it, with its stack
    for i in $(seq 8); do curl -s -o /dev/null -w '%{http_code} ' localhost:8000/limited; done  # 200s, then 429
    curl localhost:8000/metrics; curl localhost:8000/healthz; curl localhost:8000/readyz
"""

from __future__ import annotations

import asyncio
import time

from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException
from pydantic import BaseModel, Field

import opskit
from opskit.ratelimit import RateLimit

app = FastAPI(title="opskit demo", version="0.1.0")
opskit.instrument(app)

log = opskit.get_logger("examples.demo")


class NewItem(BaseModel):
    """The body of ``POST /items``."""

    name: str = Field(min_length=1, max_length=100)


class Item(NewItem):
    """A stored item."""

    id: int


_items: dict[int, Item] = {1: Item(id=1, name="kettle"), 2: Item(id=2, name="teapot")}


def _index(item: Item) -> None:
    # Runs after the response was sent; the request ID is still on the log line.
    log.info("item indexed", item_id=item.id)


@app.get("/")
async def index() -> dict[str, object]:
    """What the demo offers."""
    return {
        "service": "opskit demo",
        "routes": ["/items/{item_id}", "/items", "/slow", "/blocking", "/error", "/limited"],
    }


@app.get("/items/{item_id}")
async def get_item(item_id: int) -> Item:
    """One item, or 404."""
    item = _items.get(item_id)
    if item is None:
        raise HTTPException(status_code=404, detail="no such item")
    return item


@app.post("/items", status_code=201)
async def create_item(new: NewItem, background: BackgroundTasks) -> Item:
    """Store an item; indexing happens in a background task after the response."""
    item = Item(id=max(_items, default=0) + 1, name=new.name)
    _items[item.id] = item
    background.add_task(_index, item)
    log.info("item created", item_id=item.id)
    return item


@app.get("/slow")
async def slow(seconds: float = 1.0) -> dict[str, float]:
    """Answer after ``seconds`` (at most 10) without blocking the worker."""
    seconds = min(max(seconds, 0.0), 10.0)
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@app.get("/blocking")
async def blocking(seconds: float = 0.15) -> dict[str, float]:
    """Block the worker's event loop for ``seconds`` (at most 1): what a sync call in ``async def`` does.

    Every other request of this worker waits meanwhile; opskit's watchdog writes one warning naming
    this route, the request ID and this line.
    """
    seconds = min(max(seconds, 0.0), 1.0)
    time.sleep(seconds)  # noqa: ASYNC251 (on purpose)
    return {"blocked": seconds}


@app.get("/error")
async def error() -> None:
    """Fail with an unhandled exception: a 500 that still carries the request ID."""
    raise RuntimeError("the demo failed on purpose")


@app.get("/limited", dependencies=[Depends(RateLimit("2/second burst=5"))])
async def limited() -> dict[str, str]:
    """Rate limited per client: bursts of 5, then 2 per second; beyond that 429 with Retry-After.

    The buckets live in memory per worker unless ``OPSKIT_REDIS_URL`` points at a Redis.
    """
    return {"status": "ok"}
