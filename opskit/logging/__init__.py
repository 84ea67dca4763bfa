"""structlog JSON logging for the app, its libraries, uvicorn and gunicorn: one object per line.

- :mod:`.writer`: the process's one line writer (whole lines, one ``write(2)`` per loop iteration);
- :mod:`.processors`: request context, timestamp, static fields, redaction, rendering;
- :mod:`.config`: :func:`configure_logging`, structlog and the stdlib bridge;
- :mod:`.access`: the access log, one line per finished request.
"""

from __future__ import annotations

from .config import configure_logging, get_logger

__all__ = ["configure_logging", "get_logger"]
