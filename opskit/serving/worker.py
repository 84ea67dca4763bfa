"""The gunicorn worker: uvicorn with opskit's graceful shutdown and abort reporting.

On SIGTERM the worker marks itself not ready (``/readyz`` answers 503 at once), keeps serving for
``OPSKIT_SHUTDOWN_DELAY`` seconds so load balancers stop sending traffic, then closes its listener,
lets in-flight requests finish and exits 0 (so gunicorn's ``worker_exit`` hook flushes spans and
logs). On SIGABRT (gunicorn's timeout) it reports the requests in flight, then exits 1.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from gunicorn.arbiter import Arbiter
from uvicorn.config import Config
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker as _UvicornWorker

from .. import health
from ..logging.config import hand_framework_loggers_to_root
from ..runtime import current
from .logs import flush

__all__ = ["DrainingServer", "UvicornWorker"]

_MAX_PATH = 200


class DrainingServer(Server):
    """A uvicorn server whose first SIGTERM starts a drain instead of closing at once."""

    def __init__(self, config: Config, *, shutdown_delay: float, on_drain: Callable[[], object] | None) -> None:
        super().__init__(config)
        self.shutdown_delay = shutdown_delay
        self.on_drain = on_drain
        self.drain_until: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Unlike uvicorn, the signal is not re-raised after shutdown: the worker exits 0.
        if self.drain_until is None:
            self.drain_until = time.monotonic() + self.shutdown_delay
            if self.on_drain is not None:
                self.on_drain()
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        elif sig != signal.SIGTERM or self.shutdown_delay <= 0:
            self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self.drain_until is not None and time.monotonic() >= self.drain_until:
            self.should_exit = True
        return bool(await super().on_tick(counter))


def _request_summary(scope: dict[str, Any], request_id_header: bytes) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "method": scope.get("method"),
        "path": str(scope.get("path", ""))[:_MAX_PATH],
    }
    client = scope.get("client")
    if client:
        summary["peer"] = client[0]
    for name, value in scope.get("headers", ()):
        if name == request_id_header:
            summary["request_id"] = value[:128].decode("ascii", "replace")
    return summary


class UvicornWorker(_UvicornWorker):  # type: ignore[misc]
    """``worker_class`` for gunicorn: uvicorn with a draining shutdown and no access log of its own."""

    CONFIG_KWARGS: dict[str, Any] = {"loop": "auto", "http": "auto", "access_log": False, "server_header": False}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = current().settings
        # uvicorn-worker points uvicorn's loggers at gunicorn's handlers and stops propagation;
        # opskit's JSON logging is on the root logger instead.
        if settings.logging_enabled:
            hand_framework_loggers_to_root()
        # Proxy headers are applied only when some peer is trusted (FORWARDED_ALLOW_IPS).
        self.config.proxy_headers = bool(self.cfg.forwarded_allow_ips)
        # Requests still running when GRACEFUL_TIMEOUT is near are cancelled by the worker itself,
        # a second early, so that the app's shutdown and the span/log flush still run before the
        # master's SIGKILL.
        budget = self.cfg.graceful_timeout - settings.shutdown_delay - 1.0
        self.config.timeout_graceful_shutdown = max(0.5, budget)
        self.server: DrainingServer | None = None

    def hold_stop_signals(self) -> None:
        """Right after fork, remember stop signals until this worker installs its own handlers.

        Until then the master's handlers, inherited by the fork, would swallow them: a worker
        told to stop while booting would boot and serve on until the master's SIGKILL.
        """
        self.held_signals: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, lambda sig, frame: self.held_signals.append(sig))

    def init_signals(self) -> None:
        super().init_signals()
        # uvicorn-worker leaves SIGABRT at its default (a core dump): report the timeout instead.
        signal.signal(signal.SIGABRT, self.handle_abort)
        if getattr(self, "held_signals", None):
            sys.exit(0)  # asked to stop while booting: stop before loading the app

    def handle_abort(self, sig: int, frame: FrameType | None) -> None:
        self.alive = False
        try:
            self.cfg.worker_abort(self)
        finally:
            flush()
            # sys.exit would raise inside the blocked request, where the server may swallow it.
            os._exit(1)

    def _install_sigquit_handler(self) -> None:
        # gunicorn's quick shutdown (SIGQUIT, after SIGINT to the master): no drain delay.
        asyncio.get_running_loop().add_signal_handler(signal.SIGQUIT, self._quit)

    def _quit(self) -> None:
        if self.server is not None:
            self.server.handle_exit(signal.SIGQUIT, None)

    def in_flight(self) -> list[dict[str, Any]]:
        """The requests this worker has started but not finished answering."""
        if self.server is None:
            return []
        header = current().settings.request_id_header.lower().encode("latin-1")
        requests = []
        for connection in list(self.server.server_state.connections):
            cycle = getattr(connection, "cycle", None)
            if cycle is None or getattr(cycle, "response_complete", True):
                continue
            scope = getattr(cycle, "scope", None)
            if isinstance(scope, dict):
                requests.append(_request_summary(scope, header))
        return requests

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        # The app is imported by now (its own logging set-up included): uvicorn's access log stays
        # off whatever that did, since opskit writes the access log.
        logging.getLogger("uvicorn.access").disabled = True
        settings = current().settings  # the app's, once it has called instrument()
        self.server = DrainingServer(
            self.config, shutdown_delay=settings.shutdown_delay, on_drain=health.begin_shutdown
        )
        self._install_sigquit_handler()
        # uvloop closes the listening descriptors itself on shutdown; handing it gunicorn's
        # wrappers would make them close the same descriptors again (and log EBADF).
        await self.server.serve(sockets=[getattr(sock, "sock", sock) for sock in self.sockets])
        if not self.server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
