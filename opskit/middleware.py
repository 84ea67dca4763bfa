"""The one opskit middleware: every feature in a single pass over each request.

Features are :class:`~opskit.component.Component` objects. Instead of stacking one middleware
per feature (each wrapping ``send`` and adding a coroutine frame), this middleware wraps ``send``
once, keeps one :class:`~opskit.exchange.Exchange` per request and calls only the hooks the
enabled components implement.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Sequence
from time import perf_counter
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import health
from .client_ip import ProxyResolver
from .component import Component, overrides
from .context import _request_id
from .exchange import Exchange
from .request_ids import Rejection, RequestIdPolicy, escape_for_log
from .routes import RouteTemplates
from .settings import Settings

__all__ = ["OpskitMiddleware"]

_INTERNAL_ERROR = b"Internal Server Error"


class OpskitMiddleware:
    """Pure ASGI middleware running request IDs and every enabled opskit component.

    Usually built by :func:`opskit.instrument` or :func:`opskit.wrap`, not by hand.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: Settings,
        components: Sequence[Component] = (),
        routes: RouteTemplates | None = None,
    ) -> None:
        from ._logging import get_logger

        self.app = app
        self.settings = settings
        self.components = tuple(components)
        self.routes = routes or RouteTemplates(app, settings.unmatched_route)
        self.proxies = ProxyResolver(settings.trusted_proxies)
        self._log = get_logger("opskit")

        self._rid_header = settings.request_id_header.lower().encode("latin-1") if settings.request_id_enabled else b""
        self._rid_policy = RequestIdPolicy(
            format=settings.request_id_format,
            max_length=settings.request_id_max_length,
            trust_incoming=settings.request_id_trust_incoming,
        )

        endpoints: dict[str, ASGIApp] = {}
        if settings.health_enabled:
            endpoints[settings.health_path] = health.liveness_endpoint
            endpoints[settings.readiness_path] = health.readiness_endpoint(settings.readiness_timeout)
        for component in self.components:
            endpoints.update(component.endpoints())
        self.endpoints = endpoints

        def hooks(name: str) -> tuple[Any, ...]:
            return tuple(getattr(c, name) for c in self.components if overrides(c, name))

        self._on_start = hooks("request_started")
        self._gates = hooks("admit")
        self._on_response = hooks("response_started")
        # Unwound like a middleware stack: the last component to start is the first to finish.
        self._on_finish = hooks("request_finished")[::-1]
        self._on_close = hooks("request_closed")[::-1]
        self._ws_started = hooks("websocket_started")
        self._ws_closed = tuple(c.websocket_closed for c in self.components if hasattr(c, "websocket_closed"))[::-1]
        # With no per-request hook to feed, a request needs no Exchange and a much lighter send wrapper.
        self._lean = not (self._on_start or self._gates or self._on_response or self._on_finish or self._on_close)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
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

        if self._lean:
            # Inlined rather than a method: one coroutine frame less on every request.
            extra: tuple[bytes, bytes] | None = None
            rid_token = None
            if self._rid_header:
                rid, rid_token = self._bind_request_id(scope)
                extra = (self._rid_header, rid.encode("ascii"))
            started = False

            async def lean_send(message: Message) -> None:
                nonlocal started
                if message["type"] == "http.response.start":
                    started = True
                    if extra is not None:
                        message = {**message, "headers": [*message.get("headers", ()), extra]}
                await send(message)

            try:
                await self.app(scope, receive, lean_send)
            except Exception as exc:
                self._log_unhandled(scope, exc)
                if not started:
                    await self._internal_error(lean_send)
                raise
            finally:
                if rid_token is not None:
                    _request_id.reset(rid_token)
            return

        ex = Exchange(scope, self.proxies)
        token = self._assign_request_id(ex) if self._rid_header else None
        on_response = self._on_response
        finish = self._finish

        async def send_wrapper(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.body":
                ex.response_bytes += len(message.get("body", b""))
                if not message.get("more_body", False):
                    await send(message)
                    finish(ex)
                    return
            elif kind == "http.response.start":
                ex.status = message["status"]
                for hook in on_response:
                    hook(ex)
                if ex.response_headers:
                    message = {**message, "headers": [*message.get("headers", ()), *ex.response_headers]}
            elif kind == "http.response.pathsend":
                await send(message)
                finish(ex)
                return
            await send(message)

        try:
            for hook in self._on_start:
                hook(ex)
            for gate in self._gates:
                answer = await gate(ex)
                if answer is not None:
                    await answer(scope, receive, send_wrapper)
                    return
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            ex.exception = exc
            self._log_unhandled(scope, exc)
            if not ex.status:
                await self._internal_error(send_wrapper)
            raise
        finally:
            if not ex.end:
                finish(ex)
            for hook in self._on_close:
                hook(ex)
            if token is not None:
                _request_id.reset(token)

    def _log_unhandled(self, scope: Scope, exc: Exception) -> None:
        self._log.error("unhandled exception", method=scope.get("method", ""), path=scope["path"][:1024], exc_info=exc)
        exc.__opskit_logged__ = True  # type: ignore[attr-defined]

    def _assign_request_id(self, ex: Exchange) -> Any:
        rid, token = self._bind_request_id(ex.scope)
        ex.request_id = rid
        ex.response_headers.append((self._rid_header, rid.encode("ascii")))
        return token

    def _bind_request_id(self, scope: Scope) -> tuple[str, Any]:
        """The request's ID (the incoming one if safe, else a new one), set in the context: (ID, token).

        A refused incoming ID is logged once the new one is set, so the warning carries it.
        """
        policy = self._rid_policy
        rejected: tuple[Rejection, bytes] | None = None
        rid = None
        if policy.trust_incoming:
            header = self._rid_header
            for name, value in scope["headers"]:
                if name == header:
                    reason = policy.check(value)
                    if reason is None:
                        rid = value.decode("ascii")
                    else:
                        rejected = (reason, value)
                    break
        if rid is None:
            rid = policy.generate()
        token = _request_id.set(rid)
        if rejected is not None:
            self._warn_rejected(scope, *rejected)
        return rid, token

    def _warn_rejected(self, scope: Scope, reason: Rejection, value: bytes) -> None:
        self._log.warning(
            "invalid request id replaced",
            reason=reason,
            header=self.settings.request_id_header,
            rejected=escape_for_log(value),
            path=scope["path"][:1024],
        )

    def _finish(self, ex: Exchange) -> None:
        if ex.end:
            return
        ex.end = perf_counter()
        if not self._on_finish:
            return
        ex.route = self.routes.resolve(ex.scope)
        for hook in self._on_finish:
            try:
                hook(ex)
            except Exception as exc:  # a broken feature must not break the response
                self._log.error("opskit component failed", hook="request_finished", exc_info=exc)

    @staticmethod
    async def _internal_error(send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(_INTERNAL_ERROR)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": _INTERNAL_ERROR})

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        ex = Exchange(scope, self.proxies)
        token = self._assign_request_id(ex) if self._rid_header else None
        for hook in self._ws_started:
            hook(ex)
        extra = ex.response_headers

        async def send_wrapper(message: Message) -> None:
            kind = message["type"]
            if kind == "websocket.accept":
                ex.status = 101
                if extra:
                    message = {**message, "headers": [*message.get("headers", ()), *extra]}
            elif kind == "websocket.close" and not ex.status:
                ex.status = 403
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            ex.end = perf_counter()
            ex.route = self.routes.resolve(scope)
            for hook in self._ws_closed:
                hook(ex)
            if token is not None:
                _request_id.reset(token)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def receive_wrapper() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
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

    async def _run_lifespan(self, hook: str) -> None:
        for component in self.components:
            if not overrides(component, hook):
                continue
            try:
                await getattr(component, hook)()
            except (Exception, asyncio.CancelledError) as exc:
                # A feature that cannot start (collector or Redis down) degrades; the app still serves.
                self._log.error("opskit component failed", hook=hook, component=type(component).__name__, exc_info=exc)
