"""The tracing component: one SERVER span per HTTP request, current while the app runs.

request_started extracts the remote context from the headers (``OTEL_PROPAGATORS``), asks the sampler, starts a
:class:`ServerSpan` and makes it current, so log lines and user code (BackgroundTasks included) see
it; response_started may quote the trace in a response header; request_finished names the span
after the route and sets the status; request_closed (the app returned, so an exception that
escaped it is known, and the middleware's own context is current again) records the exception
and the request's annotations (:func:`opskit.annotate`), ends the span at the time the response
body completed and restores the previous context.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import MutableMapping
from random import getrandbits
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from opskit.component import Component
from opskit.headers import capture, request_headers
from opskit.settings.tracing import W3C_PROPAGATORS

from . import lifecycle
from .pipeline import SCOPE, check_settings
from .propagation import ForeignExtractor, extract_baggage, parse_traceparent
from .span import ServerSpan

if TYPE_CHECKING:
    from opskit.exchange import Exchange
    from opskit.runtime import Runtime

__all__ = ["TracingComponent", "create_component"]


log = logging.getLogger("opskit.tracing")

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"})
USER_AGENT_MAX = 512
HOST_MAX = 255
STATE_KEY = "opskit.tracing"
_EMPTY = otel_context.Context()
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_ERROR_LOG_INTERVAL = 60.0
# Host headers seen, parsed: a service answers to a few names. Client-controlled, so bounded; past
# the bound a new name is parsed each time.
_HOSTS_MAX = 64
_hosts: dict[bytes, tuple[str, int | None]] = {}
_tuple_new = tuple.__new__


def _span_context(
    trace_id: int, span_id: int, flags: TraceFlags, parent: SpanContext | None, trace_state: TraceState | None
) -> SpanContext:
    """The request span's context: the sampler's trace state, else the parent's. With neither a
    parent nor a sampler's state both ids are fresh, valid random numbers, so the tuple is built as
    SpanContext would build it, without its checks (a third of the cost)."""
    if trace_state is None:
        if parent is None:
            return _tuple_new(SpanContext, (trace_id, span_id, False, flags, DEFAULT_TRACE_STATE, True))
        trace_state = parent.trace_state
    return SpanContext(trace_id, span_id, False, flags, trace_state)


def _parse_host(host: bytes) -> tuple[str, int | None] | None:
    text = host.decode("latin-1")
    if not text.isprintable():
        return None
    if text.startswith("["):  # IPv6 literal: [::1]:8000
        name, _, rest = text[1:].partition("]")
        port = rest[1:]
    else:
        name, _, port = text.partition(":")
    return name, int(port) if port.isdigit() and len(port) <= 5 else None


def _server_address(host: bytes | None, scope: MutableMapping[str, Any]) -> tuple[str | None, int | None]:
    """server.address/port from the Host header (bounded, printable), else from the listening socket."""
    if host and len(host) <= HOST_MAX:
        found = _hosts.get(host)
        if found is not None:
            return found
        parsed = _parse_host(host)
        if parsed is not None:
            if len(_hosts) < _HOSTS_MAX:
                _hosts[host] = parsed
            return parsed
    server = scope.get("server")
    if server:
        return str(server[0]), server[1]
    return None, None


class TracingComponent(Component):
    """Traces every HTTP request whose path is not excluded; see the module docstring."""

    def __init__(self, runtime: Runtime) -> None:
        settings = self._settings = runtime.settings
        excluded = {settings.health_path, settings.readiness_path, settings.metrics_path}
        self._excluded = frozenset(excluded)
        patterns = settings.tracing_excluded_urls
        self._excluded_match = re.compile("|".join(f"(?:{p})" for p in patterns)).search if patterns else None
        self._unmatched = settings.unmatched_route
        self._response_header = settings.tracing_response_header
        self._always_on = settings.traces_sampler in ("always_on", "parentbased_always_on")
        self._parent_based = settings.traces_sampler.startswith("parentbased_")
        propagators = settings.propagators
        self._tracecontext = "tracecontext" in propagators
        self._baggage = "baggage" in propagators
        # None unless a non-W3C propagator (b3...) is configured: the default path never pays for it.
        foreign = [name for name in propagators if name not in W3C_PROPAGATORS and name != "none"]
        self._foreign = ForeignExtractor(propagators) if foreign else None
        self._last_error = 0.0
        headers = capture(runtime)
        self._capture_requests = headers.requests
        self._capture = headers if headers.responses else None

    def _failed(self, where: str) -> None:
        # Tracing degrades, the request goes on; one line a minute at most.
        now = time.monotonic()
        if now - self._last_error >= _ERROR_LOG_INTERVAL:
            self._last_error = now
            log.warning("tracing: %s failed; the request continues untraced", where, exc_info=True)

    def request_started(self, ex: Exchange) -> None:
        """Extract the remote context, sample, start the server span and make it current."""
        try:
            self._start(ex)
        except Exception:
            self._failed("starting a span")

    def websocket_started(self, ex: Exchange) -> None:
        """A websocket connection gets a server span too, current in the handler, as long as the connection."""
        try:
            self._start(ex, "GET")  # the upgrade request is a GET
        except Exception:
            self._failed("starting a span")

    def websocket_closed(self, ex: Exchange) -> None:
        """Name the span after the route, record 101 (accepted) or 403 (refused), end it, restore the context."""
        self.request_finished(ex)
        self.request_closed(ex)

    def _start(self, ex: Exchange, method: str | None = None) -> None:
        path: str = ex.path
        if path in self._excluded or (self._excluded_match is not None and self._excluded_match(path)):
            return
        pipeline = lifecycle.pipeline or lifecycle.start(self._settings)
        if pipeline is None:
            return
        scope = ex.scope
        traceparent = tracestate = baggage = user_agent = host = None
        for name, value in scope.get("headers", ()):
            if name == b"traceparent":
                traceparent = value
            elif name == b"tracestate":
                tracestate = value
            elif name == b"baggage":
                baggage = value
            elif name == b"user-agent":
                user_agent = value
            elif name == b"host":
                host = value
        parent = parse_traceparent(traceparent, tracestate) if traceparent and self._tracecontext else None
        if self._foreign is not None:
            parent = self._foreign.extract(scope.get("headers", ()), parent)
        base = extract_baggage(baggage, _EMPTY) if baggage and self._baggage else _EMPTY
        parent_context = trace.set_span_in_context(NonRecordingSpan(parent), base) if parent else base

        method = method or ex.method
        attributes: dict[str, Any] = {}
        if method in KNOWN_METHODS:
            attributes["http.request.method"] = method
            name = method
        else:
            attributes["http.request.method"] = "_OTHER"
            attributes["http.request.method_original"] = method[:32]
            name = "HTTP"
        id_generator = pipeline.provider.id_generator
        if type(id_generator) is RandomIdGenerator:
            # The SDK's default generator, without its two calls: random bits, never the invalid 0.
            trace_id = parent.trace_id if parent else (getrandbits(128) or id_generator.generate_trace_id())
            span_id = getrandbits(64) or id_generator.generate_span_id()
        else:
            trace_id = parent.trace_id if parent else id_generator.generate_trace_id()
            span_id = id_generator.generate_span_id()
        ex.trace_number = trace_id
        if self._always_on:
            # always_on / parentbased_always_on (the default) decided without the SDK's call chain.
            sampled = not (parent and self._parent_based and not parent.trace_flags.sampled)
            recording = sampled
            trace_state = None
            sampler_attributes = None
        else:
            result = pipeline.sampler.should_sample(parent_context, trace_id, name, SpanKind.SERVER)
            recording = result.decision is not Decision.DROP
            sampled = result.decision is Decision.RECORD_AND_SAMPLE
            trace_state = result.trace_state
            sampler_attributes = result.attributes
        if not recording:
            span_context = _span_context(trace_id, span_id, _NOT_SAMPLED, parent, trace_state)
            # Not exported, but the trace id still reaches user code and outgoing calls.
            token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(span_context), parent_context))
            ex.state[STATE_KEY] = (token, None)
            return
        span_context = _span_context(trace_id, span_id, _SAMPLED if sampled else _NOT_SAMPLED, parent, trace_state)

        attributes["url.path"] = path
        attributes["url.scheme"] = scope.get("scheme", "http")
        http_version = scope.get("http_version")
        if http_version:
            attributes["network.protocol.version"] = http_version
        address, port = _server_address(host, scope)
        if address:
            attributes["server.address"] = address
            if port is not None:
                attributes["server.port"] = port
        client = ex.client
        if client:
            attributes["client.address"] = client
        if ex.request_id:
            attributes["request_id"] = ex.request_id
        if user_agent:
            attributes["user_agent.original"] = user_agent[:USER_AGENT_MAX].decode("latin-1")
        if sampler_attributes:
            attributes.update(sampler_attributes)
        if self._capture_requests:
            for header, values in request_headers(ex).items():
                attributes[f"http.request.header.{header}"] = values
        span = ServerSpan(
            name,
            span_context,
            parent,
            attributes,
            time.time_ns(),
            pipeline.processor,
            pipeline.resource,
            SCOPE,
        )
        ex.state[STATE_KEY] = (otel_context.attach(trace.set_span_in_context(span, parent_context)), span)
        if sampled:
            # The same text as f"{trace_id:032x}", at less than half its cost.
            ex.trace_id = trace_id.to_bytes(16, "big").hex()
            ex.span_id = span_id.to_bytes(8, "big").hex()

    def response_started(self, ex: Exchange) -> None:
        """Quote the trace in ``traceresponse`` or ``Server-Timing`` when configured and sampled."""
        if self._response_header == "none" or ex.trace_id is None:
            return
        value = f"00-{ex.trace_id}-{ex.span_id}-01"
        if self._response_header == "traceresponse":
            ex.response_headers.append((b"traceresponse", value.encode()))
        else:
            ex.response_headers.append((b"server-timing", f'traceparent;desc="{value}"'.encode()))

    def request_finished(self, ex: Exchange) -> None:
        """Name the span after the route; status code, and ERROR on a 5xx (no context change here)."""
        started = ex.state.get(STATE_KEY)
        if started is None or started[1] is None:
            return
        span: ServerSpan = started[1]
        route = ex.route
        if route and route != self._unmatched:
            span.set_attribute("http.route", route)
            span.update_name(f"{span.initial_name} {route}")
        status = ex.status
        if self._capture is not None:
            for header, values in self._capture.pick(ex.app_headers, response=True).items():
                span.set_attribute(f"http.response.header.{header}", values)
        if status:
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_attribute("error.type", str(status))
                span.set_status(Status(StatusCode.ERROR))

    def request_closed(self, ex: Exchange) -> None:
        """Record an exception that escaped the app, end the span, restore the context."""
        started = ex.state.pop(STATE_KEY, None)
        if started is None:
            return
        token, span = started
        if span is not None:
            try:
                self._end(ex, span)
            except Exception:
                self._failed("ending a span")
        otel_context.detach(token)

    async def startup(self) -> None:
        """Create this process's pipeline before the first request (lifespan runs in the worker)."""
        lifecycle.start(self._settings)

    async def shutdown(self) -> None:
        """Export the queued spans and stop the export thread (lifespan shutdown, e.g. on SIGTERM)."""
        lifecycle.shutdown()

    def _end(self, ex: Exchange, span: ServerSpan) -> None:
        # Here, not in request_finished: fields annotated in the request's BackgroundTasks count too.
        annotations = ex.annotations
        if annotations:
            for key, value in annotations.items():
                if value is not None:
                    span.set_attribute(key, value)
        exception = ex.exception
        if exception is not None:
            span.record_exception(exception)
            kind = type(exception)
            span.set_attribute("error.type", f"{kind.__module__}.{kind.__qualname__}")
            span.set_status(Status(StatusCode.ERROR, f"{kind.__qualname__}: {exception}"))
        end = ex.end
        # The span lasts until the body completed, like the access log's duration: not the BackgroundTasks.
        span.end(span.start_time + int((end - ex.start) * 1e9) if end else None)


def create_component(runtime: Runtime) -> TracingComponent | None:
    """The tracing component of ``runtime``, or None when tracing is off or exports nowhere.

    A pipeline this process built from other settings (an ``init_worker()`` in ``post_fork``,
    before the app said otherwise) is stopped first. Creates no thread and no connection (safe in a
    preloading gunicorn master); raises :class:`opskit.settings.ConfigError` when the configuration
    cannot work here (``grpc`` without the gRPC extra).
    """
    settings = runtime.settings
    lifecycle.reconcile(settings)
    if not settings.tracing_enabled or settings.traces_exporter_resolved == "none":
        return None
    check_settings(settings)
    _hand_over_fastapi_tracing(runtime.app)
    return TracingComponent(runtime)


def _hand_over_fastapi_tracing(app: Any) -> None:
    """Switch off FastAPI's native request spans (``FastAPI(telemetry={"tracing": False})``).

    FastAPI starts its own SERVER span as soon as a global tracer provider exists, outside opskit's
    middleware: every request would be traced twice, at twice the cost. An app that passed its
    own ``tracer_provider`` to FastAPI keeps its choice.
    """
    config = getattr(app, "_telemetry", None)
    if isinstance(config, dict) and config.get("tracer_provider") is None:
        config["tracing"] = False
