"""When the pipeline exists: never at import or in a preloading master; once per worker, flushed on exit.

``configure(settings)`` only remembers settings. The pipeline (and its export thread) is created by
:func:`init_worker` (gunicorn ``post_fork``) or lazily by the first traced request, in the process
that serves it. :func:`shutdown` exports what is queued and stops the thread; it runs on lifespan
shutdown, from gunicorn ``worker_exit`` and at interpreter exit, whichever comes first.
"""

from __future__ import annotations

import atexit
import logging
import threading
from typing import TYPE_CHECKING

from opentelemetry import trace

from ._outbound import instrument_outbound
from ._pipeline import Pipeline, build_pipeline
from ._propagation import build_propagator

if TYPE_CHECKING:
    from opskit.settings import Settings

log = logging.getLogger("opskit.tracing")

_lock = threading.Lock()
_settings: Settings | None = None
_global_provider_set = False
_atexit_registered = False

# Read on the hot path by the tracing component: the pipeline of this process, or None.
pipeline: Pipeline | None = None


def configure(settings: Settings) -> None:
    """Remember the settings the pipeline will be built from. Creates no thread."""
    global _settings
    _settings = settings


def start(settings: Settings | None = None) -> Pipeline | None:
    """The pipeline of this process, built now if needed; None when tracing exports nothing."""
    global pipeline, _global_provider_set, _atexit_registered, _settings
    with _lock:
        if pipeline is not None:
            return pipeline
        if settings is None:
            if _settings is None:
                from opskit.settings import load_settings

                _settings = load_settings()
            settings = _settings
        else:
            _settings = settings
        if not settings.tracing_enabled or settings.traces_exporter_resolved == "none":
            return None
        built = build_pipeline(settings)
        if not _global_provider_set:
            # Spans user code starts with trace.get_tracer() go through the same pipeline.
            trace.set_tracer_provider(built.provider)
            # Outgoing calls (httpx, redis, user code's inject()) write the formats OTEL_PROPAGATORS names.
            # (Imported here: importing opentelemetry.propagate reads OTEL_PROPAGATORS on its own.)
            from opentelemetry import propagate

            propagate.set_global_textmap(build_propagator(settings.propagators))
            _global_provider_set = True
            if settings.tracing_outbound:
                instrument_outbound(built.provider)
        if not _atexit_registered:
            atexit.register(shutdown)
            _atexit_registered = True
        pipeline = built
        return built


def init_worker(settings: Settings | None = None) -> None:
    """Create this worker's tracing pipeline now; call it from gunicorn's ``post_fork`` hook.

    Uses ``settings``, else the ones the tracing component was created with, else the environment
    (``opskit.instrument`` builds its components when the app starts, so in a post_fork hook it is
    usually the environment). Without the call, lifespan startup or the first request builds it.
    """
    start(settings)


def shutdown() -> None:
    """Export every queued span, then stop the export thread. Safe to call more than once."""
    global pipeline
    with _lock:
        current, pipeline = pipeline, None
    if current is not None:
        try:
            current.shutdown()
        except Exception:  # a dead collector must not break a worker's exit
            log.warning("tracing: flushing spans on shutdown failed", exc_info=True)
