"""An app that says in ``instrument()`` what differs from the environment (``TEST_OVERRIDES``, JSON)."""

from __future__ import annotations

import json
import os

from fastapi import FastAPI
from opentelemetry import trace

import opskit

app = FastAPI()
opskit.instrument(app, **json.loads(os.environ.get("TEST_OVERRIDES", "{}")))
tracer = trace.get_tracer("tests.user")  # user code's own tracer, taken at import


@app.get("/work")
async def work() -> dict[str, int]:
    with tracer.start_as_current_span("user work"):
        opskit.get_logger("tests.user").info("working")
    return {"pid": os.getpid()}
