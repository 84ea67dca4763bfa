"""``opskit.annotate(**fields)``: the app's own facts (tenant, plan, feature flag) on the request's signals.

The middleware makes the request's :class:`~opskit.exchange.Exchange` current in a ContextVar for
the whole request. Endpoints, dependencies (sync ones run in a copy of the context), middleware
below opskit (``BaseHTTPMiddleware`` runs the app in a child task, which copies it too) and the
request's BackgroundTasks all see the same Exchange object, so a field annotated anywhere reaches
it: the access-log line, the server span's attributes, the metric labels chosen with
``OPSKIT_METRICS_LABELS``, and every later log line of the request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from .context import _exchange
from .fields import FieldPolicy

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["RESERVED", "annotate", "policy"]

#: Keys opskit writes itself on the access line and every log line: an annotation cannot replace them.
RESERVED = frozenset(
    {
        "timestamp",
        "level",
        "logger",
        "event",
        "service",
        "environment",
        "version",
        "request_id",
        "trace_id",
        "span_id",
        "method",
        "route",
        "path",
        "status",
        "duration_ms",
        "response_bytes",
        "client",
        "user_agent",
        "outcome",
        "response_status",
        "request_headers",
        "response_headers",
    }
)
_POLICY = "opskit.annotations"


def _build(runtime: Runtime) -> FieldPolicy:
    return FieldPolicy(runtime.settings.log_redact_keys, RESERVED)


def policy(runtime: Runtime) -> FieldPolicy:
    """The runtime's policy for annotated fields (built once)."""
    found: FieldPolicy = runtime.service(_POLICY, _build)
    return found


def annotate(**fields: object) -> None:
    """Attach ``fields`` to the request being handled: its access-log line, its server span, the metric
    labels named in ``OPSKIT_METRICS_LABELS`` and every log line it writes from now on.

    Callable from endpoints, dependencies, middleware below opskit and the request's BackgroundTasks.
    Values are primitives (others become their text), cut to 1,024 characters; the values of keys in
    ``OPSKIT_LOG_REDACT_KEYS`` are written as ``[REDACTED]``; keys opskit writes itself (``status``,
    ``route``...) are ignored; a request keeps 64 fields at most. Fields annotated after the response
    is complete (in a BackgroundTask) reach the span and later log lines, not the access line.

    Outside a request that opskit's middleware records (a script, a worker job, startup, or a
    process where no per-request feature but request IDs is on), the fields are bound to the current
    context with ``structlog.contextvars``: later log lines of that context carry them. An ASGI
    server runs each request in a task of its own, so there they end with the request.
    """
    ex = _exchange.get()
    if ex is not None:
        annotations = ex.annotations
        if annotations is None:
            annotations = ex.annotations = {}
        runtime = ex.runtime
        found = runtime.services.get(_POLICY)
        (found if found is not None else policy(runtime)).merge(annotations, fields)
        return
    from .runtime import current

    cleaned: dict[str, object] = {}
    policy(current()).merge(cleaned, fields)
    structlog.contextvars.bind_contextvars(**cleaned)
