"""The benchmark app, built per variant inside the server process.

``uvicorn --factory bench.apps:create`` (or gunicorn ``bench.apps:create()``) builds the variant
named by ``BENCH_VARIANT``. Peers are wired the way their READMEs and the usual recipes show.
Spans, opskit's and the OpenTelemetry instrumentation's alike, are exported over OTLP/HTTP to a
real receiver (``bench.receiver``, at ``OTEL_EXPORTER_OTLP_ENDPOINT``), which touches
``BENCH_SPAN_MARKER`` on the first batch so the harness can tell tracing really ran.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any, NoReturn

from fastapi import Depends, FastAPI, Request, Response
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from bench.floors import FLOORS
from bench.variants import (
    BY_NAME,
    LOCAL_SHARE,
    NEVER_REJECTING_LIMIT,
    OPSKIT_EXTRAS,
    OPSKIT_FEATURES,
    SHARED_TABLE,
    Variant,
)

UNAVAILABLE_EXIT = 3
UNAVAILABLE_MARK = "bench-unavailable:"


def otlp_tracer_provider() -> TracerProvider:
    """A tracer provider sampling everything, batching spans to the bench's OTLP/HTTP receiver."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    endpoint = os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider


async def per_key_rate(request: Request) -> str:
    """The rate function of the dynamic-limit variant (a plan lookup would go here)."""
    return NEVER_REJECTING_LIMIT


def base_app(extra_routes: int = 0, *, annotate: bool = False, dynamic_limit: bool = False, **options: Any) -> FastAPI:
    """The app every variant starts from: ``GET /items/{item_id}``, async, a small JSON body
    (``options`` go to ``FastAPI(...)``).

    With ``annotate`` the endpoint also calls ``opskit.annotate()`` with two fields;
    ``dynamic_limit`` limits that route with a ``RateLimit`` whose rate a function gives per key.
    """
    app = FastAPI(**options)
    dependencies: list[Any] = []
    if dynamic_limit:
        from opskit.ratelimit import RateLimit

        dependencies.append(Depends(RateLimit(per_key_rate, name="dynamic")))

    if annotate:
        import opskit

        @app.get("/items/{item_id}", dependencies=dependencies)
        async def read_annotated_item(item_id: int) -> dict[str, Any]:
            opskit.annotate(tenant="acme", plan="pro")
            return {"item_id": item_id, "name": "widget", "price": 9.99, "tags": ["a", "b"]}

    else:

        @app.get("/items/{item_id}", dependencies=dependencies)
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


def limiter_backend(features: frozenset[str]) -> dict[str, Any]:
    """The settings of the limiter backend a variant measures (none: Redis, one call per decision)."""
    if "ratelimit_shared_memory" in features:
        marker = os.environ.get("BENCH_SPAN_MARKER")  # in the server's work directory
        work = Path(marker).parent if marker else Path(tempfile.mkdtemp(prefix="bench-"))
        return {"redis_url": "", "rate_limit_shared_file": str(work / SHARED_TABLE)}
    if "ratelimit_local_share" in features:
        return {"rate_limit_local_share": LOCAL_SHARE}
    return {}


def instrument_opskit(app: FastAPI, features: frozenset[str]) -> None:
    """``opskit.instrument`` with exactly ``features`` switched on (config comes from the env)."""
    try:
        import opskit
    except ImportError as exc:  # pragma: no cover - opskit is the project itself
        unavailable(f"import opskit failed: {exc}")
    instrument = getattr(opskit, "instrument", None)
    if instrument is None:
        unavailable("opskit.instrument does not exist")
    switches: dict[str, Any] = {f"{feature}_enabled": feature in features for feature in OPSKIT_FEATURES}
    for feature in features:
        switches.update(OPSKIT_EXTRAS.get(feature, {}))
    if "ratelimit_dynamic" in features:
        switches["rate_limit"] = ""  # only the route's dynamic limit decides
    otlp: dict[str, Any] = {}
    if "otlp_metrics" in features:
        otlp["metrics_exporter"] = ("prometheus", "otlp")
    if "otlp_logs" in features:
        otlp["logs_exporter"] = "otlp"
    switches.update(limiter_backend(features))
    if "overload" in features:
        # A cap the table's load never reaches: the gate and its release run on every request.
        switches["max_in_flight"] = os.environ.get("BENCH_MAX_IN_FLIGHT") or "10000"
    try:
        instrument(app, **switches, **otlp)
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


class StructlogAccessLog:
    """The strongest hand-written structlog access log: a pure ASGI middleware, structlog's fast path.

    structlog configured as its performance guide recommends (a filtering bound logger cached on
    first use, ``orjson`` rendering straight to bytes, ``BytesLoggerFactory``), the request ID bound
    with ``structlog.contextvars`` for the request's other lines, and one line per request with the
    fields opskit's access line has, written when the response is complete.
    """

    def __init__(self, app: Any, correlation: ContextVar[str | None] | None = None) -> None:
        import orjson
        import structlog

        structlog.configure(
            cache_logger_on_first_use=True,
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.processors.format_exc_info,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.JSONRenderer(serializer=orjson.dumps),
            ],
            logger_factory=structlog.BytesLoggerFactory(),
        )
        self.app = app
        self._correlation = correlation
        self._log = structlog.get_logger("access")
        self._bind = structlog.contextvars.bind_contextvars
        self._reset = structlog.contextvars.reset_contextvars

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = self._correlation.get() if self._correlation is not None else None
        tokens = self._bind(request_id=request_id or uuid.uuid4().hex)
        status = 500
        sent = 0

        async def send_and_note(message: Any) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            client = scope.get("client")
            user_agent = next((v for k, v in scope["headers"] if k == b"user-agent"), None)
            self._log.info(
                "request",
                method=scope["method"],
                route=getattr(route, "path", None),
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - start) * 1000, 3),
                response_bytes=sent,
                client=client[0] if client else None,
                user_agent=user_agent.decode("latin-1") if user_agent is not None else None,
            )
            self._reset(**tokens)


def fastapi_limiter_options(redis_url: str) -> dict[str, Any]:
    """fastapi-limiter as its README shows: ``FastAPILimiter.init`` at startup, a ``RateLimiter``
    dependency (here the app's, so on every route); the ``FastAPI(...)`` arguments that install it."""
    from fastapi_limiter import FastAPILimiter
    from fastapi_limiter.depends import RateLimiter
    from redis import asyncio as redis_asyncio

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await FastAPILimiter.init(redis_asyncio.from_url(redis_url, encoding="utf-8", decode_responses=True))
        yield
        await FastAPILimiter.close()

    times, per = NEVER_REJECTING_LIMIT.split("/")
    if per != "second":
        raise ValueError(f"the never-rejecting limit {NEVER_REJECTING_LIMIT} is not per second")
    return {"dependencies": [Depends(RateLimiter(times=int(times), seconds=1))], "lifespan": lifespan}


def add_peers(app: FastAPI, peers: frozenset[str], redis_url: str) -> None:
    """Install the peer libraries named in ``peers``, innermost first."""
    if "slowapi" in peers:
        add_slowapi(app, redis_url)
    if "structlog" in peers:
        add_structlog_access_log(app, with_correlation_id="correlation_id" in peers)
    if "structlog_asgi" in peers:
        if "correlation_id" in peers:
            from asgi_correlation_id import correlation_id

            app.add_middleware(StructlogAccessLog, correlation=correlation_id)
        else:
            app.add_middleware(StructlogAccessLog)
    if "instrumentator" in peers:
        from prometheus_fastapi_instrumentator import Instrumentator

        Instrumentator().instrument(app).expose(app)
    if "otel" in peers:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, tracer_provider=otlp_tracer_provider())
    if "correlation_id" in peers:
        from asgi_correlation_id import CorrelationIdMiddleware

        app.add_middleware(CorrelationIdMiddleware)


def build(variant: Variant, *, redis_url: str, extra_routes: int = 0) -> FastAPI:
    """The app of ``variant``."""
    options = fastapi_limiter_options(redis_url) if "fastapi_limiter" in variant.features else {}
    app = base_app(
        extra_routes,
        annotate="annotate" in variant.features,
        dynamic_limit="ratelimit_dynamic" in variant.features,
        **options,
    )
    if variant.family == "opskit":
        instrument_opskit(app, variant.features)
    elif variant.family == "peer":
        add_peers(app, variant.features, redis_url)
    elif variant.family == "reference":
        for feature in sorted(variant.features):
            app.add_middleware(FLOORS[feature])
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
