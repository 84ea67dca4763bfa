"""Per-request context that outlives the middleware's own frames.

The request ID lives in a :class:`~contextvars.ContextVar`, so it is visible in endpoints,
dependencies, sync endpoints run in the thread pool (anyio copies the context), exception
handlers and BackgroundTasks, and to the logging processor that adds it to every line.
"""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["request_id"]

_request_id: ContextVar[str | None] = ContextVar("opskit_request_id", default=None)


def request_id() -> str | None:
    """Return the ID of the request being handled, or ``None`` outside a request."""
    return _request_id.get()
