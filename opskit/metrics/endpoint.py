"""The metrics endpoint: an ASGI app for the app's port and a tiny listener for a port of its own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Final

from starlette.types import Receive, Scope, Send

from .client_bridge import ClientMetrics
from .exposition import OPENMETRICS, TEXT, accepts_gzip, encode_body, render, wants_openmetrics
from .registry import Registry

__all__ = ["MetricsEndpoint", "MetricsServer", "Scrape"]

_MAX_HEAD: Final = 16 * 1024
_HEAD_TIMEOUT: Final = 5.0
_REASONS: Final = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


class Scrape:
    """Produces one scrape's response: merged values, rendered in the format asked for."""

    def __init__(
        self, registry: Registry, before: Callable[[], None] | None = None, client: ClientMetrics | None = None
    ) -> None:
        self.registry = registry
        self.before = before
        self.client = client

    async def respond(self, accept: str, accept_encoding: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        """Body and headers for a scrape with these request headers."""
        if self.before is not None:
            self.before()  # on the loop thread: brings this worker's own gauges up to date
        openmetrics = wants_openmetrics(accept)
        gzipped = accepts_gzip(accept_encoding)
        loop = asyncio.get_running_loop()
        # Reading the other workers' files is file I/O: keep it off the event loop.
        body = await loop.run_in_executor(None, self._body, openmetrics, gzipped)
        headers = [
            (b"content-type", (OPENMETRICS if openmetrics else TEXT).encode()),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        if gzipped:
            headers.append((b"content-encoding", b"gzip"))
        headers.append((b"vary", b"accept, accept-encoding"))
        return body, headers

    def _body(self, openmetrics: bool, gzipped: bool) -> bytes:
        body = render(self.registry.collect(), openmetrics)
        if self.client is not None:
            extra = self.client.render(openmetrics, (m.name for m in self.registry.metrics()))
            body = body.removesuffix(b"# EOF\n") + extra if openmetrics else body + extra
        return encode_body(body, gzipped)


def _simple(status: int, text: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    return status, text, [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(text)).encode())]


class MetricsEndpoint:
    """ASGI app answering ``GET``/``HEAD`` with the exposition of a registry."""

    def __init__(self, scrape: Scrape) -> None:
        self.scrape = scrape

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            status, body, headers = _simple(405, b"Method Not Allowed")
            headers.append((b"allow", b"GET, HEAD"))
        else:
            accept = accept_encoding = ""
            for name, value in scope.get("headers", ()):
                if name == b"accept":
                    accept = value.decode("latin-1")
                elif name == b"accept-encoding":
                    accept_encoding = value.decode("latin-1")
            status = 200
            body, headers = await self.scrape.respond(accept, accept_encoding)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


class MetricsServer:
    """A listener that serves the metrics path and nothing else (``OPSKIT_METRICS_PORT``).

    With several workers (``reuse_port``) every worker listens on the same port with
    ``SO_REUSEPORT``; the kernel hands each scrape to one of them and each answers with the
    numbers of all workers, so no worker is special and a dead one is simply replaced.
    """

    def __init__(self, scrape: Scrape, *, host: str, port: int, path: str, reuse_port: bool) -> None:
        self.scrape = scrape
        self.host = host
        self.port = port
        self.path = path
        self.reuse_port = reuse_port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, reuse_port=self.reuse_port or None, limit=_MAX_HEAD
        )

    @property
    def sockets(self) -> list[tuple[str, int]]:
        """The addresses listened on (the port is real even when 0 was asked for)."""
        if self._server is None:
            return []
        return [s.getsockname()[:2] for s in self._server.sockets]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _HEAD_TIMEOUT)
            try:
                status, body, headers = await self._answer(head)
            except Exception:  # a failed scrape is that scrape's 500, never the listener's end
                status, body, headers = _simple(500, b"Internal Server Error")
            lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}".encode()]
            lines += [name + b": " + value for name, value in headers]
            lines.append(b"connection: close")
            writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, head: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return _simple(400, b"Bad Request")
        method, target, _ = parts
        if target.split("?", 1)[0] != self.path:
            return _simple(404, b"Not Found")
        if method not in ("GET", "HEAD"):
            return _simple(405, b"Method Not Allowed")
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body, out = await self.scrape.respond(headers.get("accept", ""), headers.get("accept-encoding", ""))
        return 200, b"" if method == "HEAD" else body, out
