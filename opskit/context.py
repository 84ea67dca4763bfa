"""Per-request context that outlives the middleware's own frames.

The request ID and the request's Exchange live in :class:`~contextvars.ContextVar` objects, so
they are visible in endpoints, dependencies, sync endpoints run in the thread pool (anyio copies
the context), exception handlers and BackgroundTasks, and to the logging processor that adds the
ID and the request's annotations to every line.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .exchange import Exchange

__all__ = ["request_id"]

_request_id: ContextVar[str | None] = ContextVar("opskit_request_id", default=None)
#: The Exchange of the request being handled (set by the middleware for the whole request).
_exchange: ContextVar[Exchange | None] = ContextVar("opskit_exchange", default=None)


def request_id() -> str | None:
    """Return the ID of the request being handled, or ``None`` outside a request."""
    return _request_id.get()
