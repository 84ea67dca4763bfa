"""The interface every opskit feature implements to join the single middleware pass."""

from __future__ import annotations

from starlette.types import ASGIApp

from .exchange import Exchange

__all__ = ["HOOKS", "Component", "overrides"]


class Component:
    """A feature of the middleware. Every hook is optional; the defaults do nothing.

    A component is built from the process's :class:`~opskit.runtime.Runtime` by its feature's
    factory. The middleware calls only the hooks a component overrides, so an unused hook costs
    nothing. Hooks run on the event loop and must not block. A hook that raises is logged (at a
    bounded rate) and counted in ``opskit_component_errors_total``; the request goes on as if the
    hook had done nothing.
    """

    def endpoints(self) -> dict[str, ASGIApp]:
        """Paths this feature serves itself (``/metrics``); kept out of logs, metrics and traces."""
        return {}

    def request_started(self, ex: Exchange) -> None:
        """Before the app is called, in component order. ``ex.route`` is not known yet."""

    async def admit(self, ex: Exchange) -> ASGIApp | None:
        """Gate before the app: return an ASGI app that answers instead (a 429), or ``None``."""
        return None

    def response_started(self, ex: Exchange) -> None:
        """The status is known; extra headers may be appended to ``ex.response_headers``."""

    def request_finished(self, ex: Exchange) -> None:
        """The body is complete (BackgroundTasks not run yet); ``ex.route`` and ``ex.end`` are set.

        This runs inside the app's ``send``, which may be another task's context (an inner
        ``BaseHTTPMiddleware`` sends from a child task): never reset ContextVars here.
        """

    def request_failed(self, ex: Exchange) -> None:
        """The app raised ``ex.exception``: called only then, once the response is over, in reverse order.

        Runs in the middleware's own context, before :meth:`request_closed` (the request's
        ContextVars are still set). A request that succeeds never reaches it: the place for work
        that only an exception needs.
        """

    def request_closed(self, ex: Exchange) -> None:
        """The app returned (BackgroundTasks done), in the middleware's own context.

        The place to reset ContextVars set in :meth:`request_started`. Runs in reverse order.
        """

    def websocket_started(self, ex: Exchange) -> None:
        """A websocket connection arrived, before the app is called. ``ex.route`` is not known yet."""

    def websocket_accepted(self, ex: Exchange) -> None:
        """The app accepted the websocket connection; ``ex.route`` is set (the router has run)."""

    def websocket_closed(self, ex: Exchange) -> None:
        """The websocket connection ended: status 101 (accepted) or 403 (refused), ``ex.route`` and
        ``ex.end`` set, in the middleware's own context, in reverse order."""

    def process_started(self) -> None:
        """Once per serving process, before its first request: at lifespan startup, or at the first
        request or connection of a server without lifespan; again in each forked child.

        The place to start threads (they do not survive ``fork``): never called in a preloading
        master, which serves nothing. Must not block; costs requests nothing after the first.
        """

    async def startup(self) -> None:
        """ASGI lifespan startup."""

    async def shutdown(self) -> None:
        """ASGI lifespan shutdown."""


#: Every hook the middleware calls, in the order of a request's life.
HOOKS = (
    "request_started",
    "admit",
    "response_started",
    "request_finished",
    "request_failed",
    "request_closed",
    "websocket_started",
    "websocket_accepted",
    "websocket_closed",
    "process_started",
    "startup",
    "shutdown",
)


def overrides(component: Component, hook: str) -> bool:
    """Whether ``component`` implements ``hook`` itself (so the middleware must call it)."""
    return getattr(type(component), hook) is not getattr(Component, hook)
