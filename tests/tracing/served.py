"""The tracing test app, instrumented from the environment, for real servers (gunicorn)."""

from __future__ import annotations

from tests.tracing.app import create

app = create()
