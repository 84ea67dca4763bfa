"""An app with every opskit feature from the environment (tracing included), for real servers."""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI

import opskit

app = FastAPI()
opskit.instrument(app)


@app.get("/orders/{order_id}")
async def order(order_id: int) -> dict[str, Any]:
    return {"order": order_id, "pid": os.getpid()}
