"""The benchmark app, built per variant inside the server process.

``uvicorn --factory bench.apps:create`` (or gunicorn ``bench.apps:create()``) builds the variant
named by ``BENCH_VARIANT``. Peers are wired the way their READMEs and the usual recipes show.
Spans go through a ``BatchSpanProcessor`` to an exporter that drops them; the first export
touches ``BENCH_SPAN_MARKER`` so the harness can tell tracing really ran.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any, NoReturn

from fastapi import FastAPI, Request, Response
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from bench.variants import BY_NAME, NEVER_REJECTING_LIMIT, OPSKIT_FEATURES, Variant

UNAVAILABLE_EXIT = 3
UNAVAILABLE_MARK = "bench-unavailable:"


class DroppingSpanExporter(SpanExporter):
    """Accepts every batch and keeps nothing; marks a file on the first batch."""

    def __init__(self, marker: str | None) -> None:
        self._marker = Path(marker) if marker else None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._marker is not None and spans:
            self._marker.touch()
            self._marker = None
        return SpanExportResult.SUCCESS


def dropping_tracer_provider() -> TracerProvider:
    """A tracer provider sampling everything, batching spans to :class:`DroppingSpanExporter`."""
    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    provider.add_span_processor(BatchSpanProcessor(DroppingSpanExporter(os.environ.get("BENCH_SPAN_MARKER"))))
    return provider


def base_app(extra_routes: int = 0) -> FastAPI:
    """The app every variant starts from: ``GET /items/{item_id}``, async, a small JSON body."""
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def read_item(item_id: int) -> dict[str, Any]:
        return {"item_id": item_id, "name": "widget", "price": 9.99, "tags": ["a", "b"]}

    for index in range(extra_routes):

        async def other(item_id: int) -> dict[str, Any]:
            return {"item_id": item_id}

        app.add_api_route(f"/r{index}/items/{{item_id}}", other, methods=["GET"])
    return app


def unavailable(reason: str) -> NoReturn:
    """Stop the server process: the variant's feature is unavailable in this build."""
    print(f"{UNAVAILABLE_MARK} {reason}", file=sys.stderr, flush=True)
    raise SystemExit(UNAVAILABLE_EXIT)


def use_dropping_exporter_in_opskit() -> str | None:
    """Make opskit's tracing pipeline (its own provider and batch processor) export to the dropping exporter.

    opskit builds its exporter from ``OTEL_TRACES_EXPORTER``, which offers no exporter that drops;
    the harness swaps the factory, so the batch processor, sampler and provider stay opskit's own.
    Returns why it could not, or None.
    """
    try:
        pipeline = importlib.import_module("opskit.tracing.pipeline")
    except ImportError as exc:
        return f"opskit.tracing is not there ({exc})"
    if not callable(getattr(pipeline, "build_exporter", None)):
        return "opskit.tracing.pipeline.build_exporter, where the bench plugs its exporter, is gone"
    marker = os.environ.get("BENCH_SPAN_MARKER")
    setattr(pipeline, "build_exporter", lambda settings: DroppingSpanExporter(marker))  # noqa: B010
    return None


def instrument_opskit(app: FastAPI, features: frozenset[str]) -> None:
    """``opskit.instrument`` with exactly ``features`` switched on (config comes from the env).

    When tracing cannot be wired to the dropping exporter, a tracing-only variant is unavailable and
    a variant with more features runs without tracing (the harness then reports it as partial).
    """
    try:
        import opskit
    except ImportError as exc:  # pragma: no cover - opskit is the project itself
        unavailable(f"import opskit failed: {exc}")
    instrument = getattr(opskit, "instrument", None)
    if instrument is None:
        unavailable("opskit.instrument does not exist")
    switches: dict[str, Any] = {f"{feature}_enabled": feature in features for feature in OPSKIT_FEATURES}
    if "overload" in features:
        # A cap the table's load never reaches: the gate and its release run on every request.
        switches["max_in_flight"] = os.environ.get("BENCH_MAX_IN_FLIGHT") or "10000"
    if "tracing" in features and (problem := use_dropping_exporter_in_opskit()) is not None:
        if features == {"tracing"}:
            unavailable(problem)
        switches["tracing_enabled"] = False
    try:
        instrument(app, **switches)
    except Exception as exc:
        unavailable(f"opskit.instrument raised {type(exc).__name__}: {exc}")


def add_slowapi(app: FastAPI, redis_url: str) -> None:
    """slowapi's README recipe: a default limit for every route, Redis storage, its middleware."""
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.middleware import SlowAPIMiddleware
    from slowapi.util import get_remote_address

    limiter = Limiter(key_func=get_remote_address, default_limits=[NEVER_REJECTING_LIMIT], storage_uri=redis_url)
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
    app.add_middleware(SlowAPIMiddleware)


def add_structlog_access_log(app: FastAPI, *, with_correlation_id: bool) -> None:
    """The usual structlog access log for FastAPI: an http middleware, structlog's own fast pipeline.

    structlog configured as its docs recommend for production (native filtering logger, cached,
    ISO timestamps, ``JSONRenderer``, printing to stdout), and the ``@app.middleware("http")``
    access-log middleware of the widely copied FastAPI recipe. With asgi-correlation-id installed
    too, the request ID comes from its context variable.
    """
    import structlog

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    access_logger = structlog.get_logger("api.access")

    correlation_id: ContextVar[str | None] | None = None
    if with_correlation_id:
        from asgi_correlation_id import correlation_id

    @app.middleware("http")
    async def logging_middleware(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        structlog.contextvars.clear_contextvars()
        request_id = (correlation_id.get() if correlation_id else None) or uuid.uuid4().hex
        structlog.contextvars.bind_contextvars(request_id=request_id)
        start = time.perf_counter_ns()
        response = Response(status_code=500)
        try:
            response = await call_next(request)
        finally:
            duration = time.perf_counter_ns() - start
            client = request.client
            access_logger.info(
                f"{request.method} {request.url.path}",
                http={
                    "url": str(request.url),
                    "status_code": response.status_code,
                    "method": request.method,
                    "request_id": request_id,
                    "version": request.scope["http_version"],
                },
                network={"client": {"ip": client.host, "port": client.port}} if client else {},
                duration=duration,
            )
            response.headers["X-Process-Time"] = str(duration / 10**9)
        return response


_FLOOR_ID: ContextVar[str | None] = ContextVar("bench_floor_request_id", default=None)
_FLOOR_HEADER = (b"x-request-id", b"0123456789abcdef0123456789abcdef")


class RequestIdFloor:
    """The least any request-ID middleware does: set a context variable, add one response header.

    No parsing, no validation, no generation: what this costs is the floor under every request-ID
    feature (uvicorn's own handling of one more header included).
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = _FLOOR_ID.set(_FLOOR_HEADER[1].decode())

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), _FLOOR_HEADER]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _FLOOR_ID.reset(token)


def add_peers(app: FastAPI, peers: frozenset[str], redis_url: str) -> None:
    """Install the peer libraries named in ``peers``, innermost first."""
    if "slowapi" in peers:
        add_slowapi(app, redis_url)
    if "structlog" in peers:
        add_structlog_access_log(app, with_correlation_id="correlation_id" in peers)
    if "instrumentator" in peers:
        from prometheus_fastapi_instrumentator import Instrumentator

        Instrumentator().instrument(app).expose(app)
    if "otel" in peers:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, tracer_provider=dropping_tracer_provider())
    if "correlation_id" in peers:
        from asgi_correlation_id import CorrelationIdMiddleware

        app.add_middleware(CorrelationIdMiddleware)


def build(variant: Variant, *, redis_url: str, extra_routes: int = 0) -> FastAPI:
    """The app of ``variant``."""
    app = base_app(extra_routes)
    if variant.family == "opskit":
        instrument_opskit(app, variant.features)
    elif variant.family == "peer":
        add_peers(app, variant.features, redis_url)
    elif variant.family == "reference":
        app.add_middleware(RequestIdFloor)
    return app


def add_busy_route(app: FastAPI, milliseconds: float) -> None:
    """``GET /busy``: ``milliseconds`` of event-loop time in one go (CPU on the loop's thread, no await)."""

    @app.get("/busy")
    async def busy() -> dict[str, bool]:
        end = time.thread_time() + milliseconds / 1000
        while time.thread_time() < end:
            pass
        return {"busy": True}


def create() -> FastAPI:
    """The uvicorn/gunicorn factory: the variant named by ``BENCH_VARIANT`` (``/busy`` with ``BENCH_BUSY_MS``)."""
    variant = BY_NAME[os.environ["BENCH_VARIANT"]]
    app = build(
        variant,
        redis_url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
        extra_routes=int(os.environ.get("BENCH_ROUTES", "0")),
    )
    if os.environ.get("BENCH_BUSY_MS"):
        add_busy_route(app, float(os.environ["BENCH_BUSY_MS"]))
    return app
