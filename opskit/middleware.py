"""The one opskit middleware: a dispatcher that runs every enabled component in a single pass.

Features are :class:`~opskit.component.Component` objects. Instead of stacking one middleware
per feature (each wrapping ``send`` and adding a coroutine frame), this middleware wraps ``send``
once, keeps one :class:`~opskit.exchange.Exchange` per request and calls only the hooks the
enabled components implement. It knows hooks, not features, and has one error policy for all of
them: a hook that raises is logged at a bounded rate and counted, and the response goes on.
"""

from __future__ import annotations

import asyncio
import gc
import os
import weakref
from collections.abc import Callable, Sequence
from time import perf_counter
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import health
from .client_ip import server_proxy_headers
from .component import Component, overrides
from .context import _exchange, _request_id
from .exchange import SCOPE_KEY, Exchange
from .logging import get_logger
from .metrics.registry import Counter
from .request_ids import RequestIdComponent
from .runtime import Runtime
from .throttle import ThrottledLog

__all__ = ["DISCONNECTED", "OpskitMiddleware"]

#: The status recorded for a request whose client left before its response was complete (as nginx).
DISCONNECTED = 499
_INTERNAL_ERROR = b"Internal Server Error"
_UNAVAILABLE = b"Service Unavailable"
_PER_REQUEST = ("request_started", "admit", "response_started", "request_finished", "request_failed", "request_closed")


class OpskitMiddleware:
    """Pure ASGI middleware running every enabled opskit component.

    Usually built by :func:`opskit.instrument` or :func:`opskit.wrap`, not by hand.
    """

    def __init__(self, app: ASGIApp, runtime: Runtime, components: Sequence[Component] = ()) -> None:
        self.app = app
        self.runtime = runtime
        self.settings = runtime.settings
        self.components = tuple(components)
        self.routes = runtime.routes
        # The client and scheme forwarded by trusted proxies go into the scope before anything reads it.
        self._forward = runtime.proxies.forward if runtime.proxies.enabled else None
        self._log = get_logger("opskit")
        self._failures = ThrottledLog(self._log, 60.0)
        self._failure_counter: Counter | None = None
        self._cancel_counter: Counter | None = None

        endpoints: dict[str, ASGIApp] = {}
        for component in self.components:
            endpoints.update(component.endpoints())
        self.endpoints = endpoints

        def hooks(name: str) -> tuple[tuple[Component, Any], ...]:
            return tuple((c, getattr(c, name)) for c in self.components if overrides(c, name))

        self._on_start = hooks("request_started")
        self._gates = hooks("admit")
        self._on_response = hooks("response_started")
        # Unwound like a middleware stack: the last component to start is the first to finish.
        self._on_finish = hooks("request_finished")[::-1]
        self._on_fail = hooks("request_failed")[::-1]
        self._on_close = hooks("request_closed")[::-1]
        self._ws_started = hooks("websocket_started")
        self._ws_accepted = hooks("websocket_accepted")
        self._ws_closed = hooks("websocket_closed")[::-1]
        self._on_process = hooks("process_started")
        # The step every scope but lifespan's takes first. Until this process has started its
        # components it is _first_scope, which starts them and hands the step on to the proxy
        # forwarding (or to nothing): once started, a request pays no check of its own for it.
        self._unstarted = False
        self._prepare: Callable[[Scope], None] | None = self._forward
        if self._on_process:
            self._awaiting_process()
            _instances.add(self)
        # The app's own response headers are kept only for response-header capture (decided here,
        # not per request).
        self._keep_app_headers = bool(self.settings.capture_headers_server_response)
        # A request whose only per-request feature is its ID needs no Exchange: a lighter path.
        active = [c for c in self.components if any(overrides(c, h) for h in _PER_REQUEST)]
        only = active[0] if len(active) == 1 else None
        self._lean = not active or isinstance(only, RequestIdComponent)
        # No per-request feature at all (runtime health alone): requests go straight to the app.
        self._direct = not active
        # The lean path is taken only with request IDs on (with nothing on, the direct one is).
        self._bind_id: Callable[[Scope], tuple[str, Any]] = _no_request_ids
        self._id_header = b""
        if isinstance(only, RequestIdComponent):
            self._bind_id = only.bind
            self._id_header = only.header

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if self._prepare is not None and kind != "lifespan":
            self._prepare(scope)
        if kind != "http":
            if kind == "websocket":
                await self._websocket(scope, receive, send)
            elif kind == "lifespan":
                await self._lifespan(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return

        endpoint = self.endpoints.get(scope["path"])
        if endpoint is not None:
            await endpoint(scope, receive, send)
            return

        if self._direct:
            await self.app(scope, receive, send)
            return

        if self._lean:
            # Inlined rather than a method: one coroutine frame less on every request.
            rid, rid_token = self._bind_id(scope)
            extra = (self._id_header, rid.encode("ascii"))
            started = False

            async def lean_send(message: Message) -> None:
                nonlocal started
                if message["type"] == "http.response.start":
                    started = True
                    message = {**message, "headers": [*message.get("headers", ()), extra]}
                await send(message)

            try:
                await self.app(scope, receive, lean_send)
            except Exception as exc:
                self._log_unhandled(scope, exc)
                if not started:
                    await self._internal_error(lean_send)
                raise
            except asyncio.CancelledError:
                self._cancelled()
                if not started:
                    await self._unavailable(lean_send)
            finally:
                _request_id.reset(rid_token)
            return

        ex = Exchange(scope, self.runtime)
        scope[SCOPE_KEY] = ex
        ex_token = _exchange.set(ex)  # opskit.annotate() finds the request from anywhere below
        on_response = self._on_response
        finish = self._finish
        keep_app_headers = self._keep_app_headers

        sent_all = False  # the last body message is on its way: a disconnect now is the normal end

        async def send_wrapper(message: Message) -> None:
            nonlocal sent_all
            kind = message["type"]
            if kind == "http.response.body":
                size = len(message.get("body", b""))
                ex.response_bytes += size
                if not message.get("more_body", False):
                    sent_all = True
                    await send(message)
                    finish(ex)
                    return
                if size and not ex.first_byte:  # a body sent in parts: its first bytes
                    ex.first_byte = perf_counter()
            elif kind == "http.response.start":
                ex.status = message["status"]
                if keep_app_headers:
                    ex.app_headers = message.get("headers", ())
                for component, hook in on_response:
                    try:
                        hook(ex)
                    except Exception as exc:
                        self._hook_failed(component, "response_started", exc)
                if ex.response_headers:
                    message = {**message, "headers": [*message.get("headers", ()), *ex.response_headers]}
            elif kind == "http.response.pathsend":
                sent_all = True
                await send(message)
                finish(ex)
                return
            await send(message)

        async def receive_wrapper() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect" and not sent_all:
                ex.disconnected = True
            return message

        try:
            for component, hook in self._on_start:
                try:
                    hook(ex)
                except Exception as exc:
                    self._hook_failed(component, "request_started", exc)
            for component, gate in self._gates:
                try:
                    answer = await gate(ex)
                except Exception as exc:
                    self._hook_failed(component, "admit", exc)
                    continue
                if answer is not None:
                    await answer(scope, receive_wrapper, send_wrapper)
                    return
            await self.app(scope, receive_wrapper, send_wrapper)
        except Exception as exc:
            ex.exception = exc
            self._log_unhandled(scope, exc)
            try:
                if not ex.status:
                    await self._internal_error(send_wrapper)
            finally:
                if self._on_fail:  # here, not in the finally below: a request that succeeded checks nothing
                    finish(ex)
                    self._run(self._on_fail, "request_failed", ex)
            raise
        except asyncio.CancelledError:
            ex.annotate(outcome="cancelled")
            self._cancelled()
            if not ex.status:
                await self._unavailable(send_wrapper)
        finally:
            if not ex.end:
                # A response begun but never completed: the server dropped it (uvicorn drops what is
                # sent after the client left) or a streaming response stopped on the disconnect.
                if ex.status and ex.exception is None:
                    ex.disconnected = True
                finish(ex)
            for component, hook in self._on_close:  # inlined like _run: one call less per request
                try:
                    hook(ex)
                except Exception as exc:
                    self._hook_failed(component, "request_closed", exc)
            _exchange.reset(ex_token)
            # The scope and its Exchange refer to each other: broken here, both are freed at once
            # instead of waiting for (and costing) a cyclic collection.
            del scope[SCOPE_KEY]

    def _awaiting_process(self) -> None:
        self._unstarted = True
        self._prepare = self._first_scope

    def _first_scope(self, scope: Scope) -> None:
        """The first request or connection of this process (no lifespan started it): start, then forward."""
        self._process_started()
        if self._forward is not None:
            self._forward(scope)

    def _process_started(self) -> None:
        """Call every ``process_started`` hook, once in this process (lifespan startup or first scope)."""
        if not self._unstarted:
            return
        self._unstarted = False
        self._prepare = self._forward
        for component, hook in self._on_process:
            try:
                hook()
            except Exception as exc:
                self._hook_failed(component, "process_started", exc)

    def _run(self, hooks: tuple[tuple[Component, Any], ...], name: str, ex: Exchange) -> None:
        for component, hook in hooks:
            try:
                hook(ex)
            except Exception as exc:
                self._hook_failed(component, name, exc)

    def _hook_failed(self, component: Component, hook: str, exc: BaseException) -> None:
        """A broken feature never breaks the response: logged at a bounded rate and counted."""
        kind = type(component).__name__
        counter = self._failure_counter
        if counter is None:
            counter = self._failure_counter = self.runtime.registry.counter(
                "opskit_component_errors_total",
                "Exceptions raised by an opskit component's hook; the request went on without it.",
                ("component", "hook"),
            )
        counter.labels(kind, hook).inc()
        suppressed = self._failures.allow(f"{kind}.{hook}")
        if suppressed is not None:
            self._log.error("opskit component failed", component=kind, hook=hook, suppressed=suppressed, exc_info=exc)

    def _log_unhandled(self, scope: Scope, exc: Exception) -> None:
        self._log.error("unhandled exception", method=scope.get("method", ""), path=scope["path"][:1024], exc_info=exc)
        exc.__opskit_logged__ = True  # type: ignore[attr-defined]

    def _finish(self, ex: Exchange) -> None:
        if ex.end:
            return
        ex.end = perf_counter()
        if ex.disconnected:
            # Recorded as nginx does: 499, with the status the app chose and the bytes it got to send.
            ex.annotate(outcome="client_disconnected", response_status=ex.status)
            ex.status = DISCONNECTED
        if not self._on_finish:
            return
        ex.route = self.routes.resolve(ex.scope)
        for component, hook in self._on_finish:  # inlined like _run: one call less per request
            try:
                hook(ex)
            except Exception as exc:
                self._hook_failed(component, "request_finished", exc)

    def _cancelled(self) -> None:
        """The server cancelled the request (a drain deadline): counted; the request is answered
        here, so neither the server's bare 500 nor a traceback follows."""
        counter = self._cancel_counter
        if counter is None:
            counter = self._cancel_counter = self.runtime.registry.counter(
                "opskit_requests_cancelled_total",
                "Requests the server cancelled before they finished (e.g. at the drain deadline).",
            )
        counter.labels().inc()

    @staticmethod
    async def _internal_error(send: Send) -> None:
        await _plain_answer(send, 500, _INTERNAL_ERROR)

    @staticmethod
    async def _unavailable(send: Send) -> None:
        await _plain_answer(send, 503, _UNAVAILABLE, [(b"retry-after", b"1"), (b"connection", b"close")])

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        ex = Exchange(scope, self.runtime)
        scope[SCOPE_KEY] = ex
        self._run(self._ws_started, "websocket_started", ex)
        extra = ex.response_headers

        async def send_wrapper(message: Message) -> None:
            kind = message["type"]
            if kind == "websocket.send":
                ex.messages_sent += 1
            elif kind == "websocket.accept":
                ex.status = 101
                if extra:
                    message = {**message, "headers": [*message.get("headers", ()), *extra]}
                if self._ws_accepted:
                    ex.route = self.routes.resolve(scope)
                    self._run(self._ws_accepted, "websocket_accepted", ex)
            elif kind == "websocket.close" and not ex.status:
                ex.status = 403
            elif kind == "websocket.http.response.start":
                ex.status = message["status"]  # a denial response (e.g. a rate limit's 429)
            await send(message)

        async def receive_wrapper() -> Message:
            message = await receive()
            if message["type"] == "websocket.receive":
                ex.messages_received += 1
            return message

        token = _exchange.set(ex)
        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        finally:
            ex.end = perf_counter()
            ex.route = self.routes.resolve(scope)
            self._run(self._ws_closed, "websocket_closed", ex)
            _exchange.reset(token)
            del scope[SCOPE_KEY]

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def receive_wrapper() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._warn_about_server_proxy_headers()
                self._process_started()
                await self._run_lifespan("startup")
            elif message["type"] == "lifespan.shutdown":
                health.begin_shutdown()
                await self._run_lifespan("shutdown")
            return message

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete" and self.settings.gc_freeze:
                # What exists now (modules, routes, schemas, pools) lives as long as the process.
                # Left in the GC's generations, every full collection walks all of it: tens of
                # milliseconds during which no request moves, the p99 of a busy server.
                gc.collect()
                gc.freeze()
            await send(message)

        await self.app(scope, receive_wrapper, send_wrapper)

    def _warn_about_server_proxy_headers(self) -> None:
        if not self.settings.ratelimit_enabled:
            return
        peers = server_proxy_headers()
        if peers is not None:
            self._log.warning(
                "the server applies X-Forwarded-For itself: a client of these peers chooses the address rate "
                "limits count; serve with `opskit serve`, or `uvicorn --no-proxy-headers` and OPSKIT_TRUSTED_PROXIES",
                peers=peers,
            )

    async def _run_lifespan(self, hook: str) -> None:
        for component in self.components:
            if not overrides(component, hook):
                continue
            try:
                await getattr(component, hook)()
            except (Exception, asyncio.CancelledError) as exc:
                # A feature that cannot start (collector or Redis down) degrades; the app still serves.
                self._hook_failed(component, hook, exc)


_instances: weakref.WeakSet[OpskitMiddleware] = weakref.WeakSet()


def _forked() -> None:
    # The parent's threads did not come along: the child starts its own, at its lifespan or first request.
    for middleware in list(_instances):
        middleware._awaiting_process()


os.register_at_fork(after_in_child=_forked)


def _no_request_ids(scope: Scope) -> tuple[str, Any]:
    raise RuntimeError("the lean path needs the request-ID component")


async def _plain_answer(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*headers, *(extra or ())]})
    await send({"type": "http.response.body", "body": body})
