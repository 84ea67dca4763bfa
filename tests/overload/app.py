"""The overload test app, instrumented from the environment, for real servers.

``/held`` waits until the file named by ``HOLD_FILE`` exists: the test decides when the requests
it holds finish, whatever the machine's speed.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from fastapi import FastAPI

import opskit

app = FastAPI()
opskit.instrument(app)


@app.get("/held")
async def held() -> dict[str, bool]:
    release = Path(os.environ["HOLD_FILE"])
    # A file another process creates: nothing to await but the clock (one stat a poll).
    while not release.exists():  # noqa: ASYNC110, ASYNC240
        await asyncio.sleep(0.01)
    return {"held": True}


@app.get("/fast")
async def fast() -> dict[str, bool]:
    return {"fast": True}
