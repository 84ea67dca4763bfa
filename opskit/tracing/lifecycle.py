"""When the pipeline exists: never at import or in a preloading master; once per worker, flushed on exit.

The pipeline (and its export thread) is created by the tracing component at lifespan startup or
by the first traced request, in the process that serves it, from the runtime's settings; or
earlier by :func:`init_worker` from a gunicorn ``post_fork`` hook of the user's own. When the app's
settings then differ from the ones it was built from (``instrument(app, tracing_enabled=False)``,
another ``service_name``), :func:`reconcile` stops it, logging one line, and the component builds
the right one.

The process's global tracer provider is set once, to a :class:`ProcessTracerProvider` that hands
user code's spans to whichever pipeline is current, or to none: switching tracing off or
rebuilding it reaches tracers obtained before. :func:`shutdown` exports what is queued and stops
the thread; it runs on lifespan shutdown, from gunicorn ``worker_exit`` and at interpreter exit.
"""

from __future__ import annotations

import atexit
import logging
import threading
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from .outbound import instrument_outbound
from .pipeline import Pipeline, build_pipeline
from .propagation import build_propagator

if TYPE_CHECKING:
    from opskit.settings import Settings

__all__ = ["ProcessTracerProvider", "init_worker", "pipeline", "reconcile", "shutdown", "start"]

log = logging.getLogger("opskit.tracing")

_lock = threading.Lock()
_built_from: tuple[Any, ...] | None = None
_atexit_registered = False
_NOOP = trace.NoOpTracer()

# Read on the hot path by the tracing component: the pipeline of this process, or None.
pipeline: Pipeline | None = None


class _ProcessTracer(trace.Tracer):
    """A tracer of :class:`ProcessTracerProvider`: each span goes to the pipeline current then."""

    def __init__(self, owner: ProcessTracerProvider, args: tuple[Any, ...]) -> None:
        self._owner = owner
        self._args = args
        self._for: TracerProvider | None = None
        self._tracer: trace.Tracer = _NOOP

    def _current(self) -> trace.Tracer:
        delegate = self._owner.delegate
        if delegate is None:
            return _NOOP
        if delegate is not self._for:
            self._tracer, self._for = delegate.get_tracer(*self._args), delegate
        return self._tracer

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        return self._current().start_span(*args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return self._current().start_as_current_span(*args, **kwargs)


class ProcessTracerProvider(trace.TracerProvider):
    """The global tracer provider opskit installs once per process.

    Its tracers hand spans to :attr:`delegate`, the current pipeline's SDK provider, or to a
    no-op tracer while there is none (tracing off, or not started yet).
    """

    def __init__(self) -> None:
        self.delegate: TracerProvider | None = None

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        names = ("instrumenting_module_name", "instrumenting_library_version", "schema_url", "attributes")
        return _ProcessTracer(self, (*args, *(kwargs[n] for n in names[len(args) :] if n in kwargs)))


PROVIDER = ProcessTracerProvider()
_provider_installed = False


def _key(settings: Settings) -> tuple[Any, ...] | None:
    """What a pipeline depends on, or None when these settings export nothing."""
    if not settings.tracing_enabled or settings.traces_exporter_resolved == "none":
        return None
    from opskit.settings.tracing import TracingSettings

    fields = (*TracingSettings.model_fields, "service_name", "service_version", "environment")
    return tuple(getattr(settings, name) for name in fields)


def start(settings: Settings) -> Pipeline | None:
    """The pipeline of this process for ``settings``, built now if needed; None when they export nothing."""
    global pipeline, _built_from, _atexit_registered, _provider_installed
    key = _key(settings)
    with _lock:
        if pipeline is not None and key == _built_from:
            return pipeline
        _finish(_detach_locked())
        if key is None:
            return None
        built = build_pipeline(settings)
        PROVIDER.delegate = built.provider
        if not _provider_installed:
            # Spans user code starts with trace.get_tracer() go through the current pipeline.
            trace.set_tracer_provider(PROVIDER)
            # Outgoing calls (httpx, redis, user code's inject()) write the formats OTEL_PROPAGATORS names.
            # (Imported here: importing opentelemetry.propagate reads OTEL_PROPAGATORS on its own.)
            from opentelemetry import propagate

            propagate.set_global_textmap(build_propagator(settings.propagators))
            _provider_installed = True
            if settings.tracing_outbound:
                instrument_outbound(PROVIDER)
        if not _atexit_registered:
            atexit.register(shutdown)
            _atexit_registered = True
        pipeline, _built_from = built, key
        return built


def reconcile(settings: Settings) -> None:
    """Stop a pipeline built from other settings than ``settings`` (one log line when it does).

    The component built from ``settings`` then starts the right one, if any, at lifespan startup.
    """
    key = _key(settings)
    with _lock:
        if pipeline is None or key == _built_from:
            return
        old = _detach_locked()
    _finish(old)
    if key is None:
        log.info("tracing: the pipeline started before the app was switched off by the app's settings")
    else:
        log.info("tracing: the pipeline started before the app is rebuilt with the app's settings")


def init_worker(settings: Settings | None = None) -> None:
    """Create this worker's tracing pipeline now, e.g. from a gunicorn ``post_fork`` hook.

    Uses ``settings``, else the process's runtime (:func:`opskit.runtime.current`). Without the
    call, lifespan startup or the first request builds it; ``opskit serve`` leaves it to them.
    """
    if settings is None:
        from opskit.runtime import current

        settings = current().settings
    start(settings)


def _detach_locked() -> Pipeline | None:
    global pipeline, _built_from
    old, pipeline, _built_from = pipeline, None, None
    PROVIDER.delegate = None
    return old


def _finish(old: Pipeline | None) -> None:
    # Outside the lock where possible: a dead collector makes the flush wait for its timeout.
    if old is not None:
        try:
            old.shutdown()
        except Exception:  # a dead collector must not break a worker's exit
            log.warning("tracing: flushing spans on shutdown failed", exc_info=True)


def shutdown() -> None:
    """Export every queued span, then stop the export thread. Safe to call more than once."""
    with _lock:
        old = _detach_locked()
    _finish(old)
