"""Client spans for outgoing httpx and redis calls, when their OpenTelemetry instrumentations are installed."""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

__all__ = ["INSTRUMENTORS", "instrument_outbound"]


log = logging.getLogger("opskit.tracing")

# library -> (instrumentation module, instrumentor class)
INSTRUMENTORS = {
    "httpx": ("opentelemetry.instrumentation.httpx", "HTTPXClientInstrumentor"),
    "redis": ("opentelemetry.instrumentation.redis", "RedisInstrumentor"),
}


def instrument_outbound(provider: TracerProvider) -> list[str]:
    """Instrument every library of :data:`INSTRUMENTORS` whose instrumentation is importable.

    Returns the names instrumented; a missing package is skipped with one log line.
    """
    done: list[str] = []
    for library, (module_name, class_name) in INSTRUMENTORS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            log.info("tracing: %s calls not traced (pip install %s)", library, module_name.replace(".", "-"))
            continue
        instrumentor = getattr(module, class_name)()
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=provider)
        done.append(library)
    return done
