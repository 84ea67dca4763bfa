"""The full test app, instrumented from the environment, for real servers (uvicorn, gunicorn)."""

from __future__ import annotations

from tests.apps.full import create

app = create()
