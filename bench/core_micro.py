"""In-process cost of opskit's core per request (no server, no network): ``python bench/core_micro.py``.

Drives a FastAPI app's ASGI callable directly and reports microseconds per request for the bare
app, for the request-ID floor (a middleware that only sets a context variable and adds a header)
and for opskit's request-ID and access-log components ("annotate": the core with an endpoint that
annotates two fields), so hot-path changes can be compared quickly.
Not a test; the end-to-end numbers come from ``make bench``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

import opskit
from bench import asgi_driver
from bench.asgi_driver import http_scope
from bench.floors import RequestIdFloor

OFF = {
    "metrics_enabled": False,
    "tracing_enabled": False,
    "ratelimit_enabled": False,
}


def make(variant: str) -> Any:
    app = FastAPI()

    if variant == "annotate":

        @app.get("/items/{item_id}")
        async def annotated(item_id: int) -> dict[str, int]:
            opskit.annotate(tenant="acme", plan="pro")
            return {"item_id": item_id}

    else:

        @app.get("/items/{item_id}")
        async def item(item_id: int) -> dict[str, int]:
            return {"item_id": item_id}

    if variant == "request_id":
        opskit.instrument(app, logging_enabled=False, **OFF)
    elif variant == "access_log":
        opskit.instrument(app, request_id_enabled=False, **OFF)
    elif variant in ("core", "annotate"):
        opskit.instrument(app, **OFF)
    elif variant == "floor":
        app.add_middleware(RequestIdFloor)
    return app


async def drive(app: Any, n: int) -> float:
    headers = [(b"host", b"bench"), (b"user-agent", b"bench/1"), (b"accept", b"*/*")]
    return await asgi_driver.drive(app, n, http_scope("/items/42", headers), warmup=500)


def main() -> None:
    n = int(os.environ.get("N", "20000"))
    variants = sys.argv[1:] or ["bare", "floor", "request_id", "access_log", "core", "annotate"]
    devnull = open(os.devnull, "w")  # noqa: SIM115
    sys.stdout, real = devnull, sys.stdout
    results: dict[str, float] = {}
    run: Callable[[Any], float] = lambda app: asyncio.run(drive(app, n))  # noqa: E731
    for _ in range(int(os.environ.get("ROUNDS", "5"))):
        for v in variants:
            us = run(make(v))
            results[v] = min(results.get(v, us), us)
    sys.stdout = real
    bare = results.get("bare")
    for v, us in results.items():
        extra = f"  (+{us - bare:.1f} us)" if bare and v != "bare" else ""
        print(f"{v:12s} {us:7.1f} us/request{extra}")


if __name__ == "__main__":
    main()
