"""Websocket limits: handshakes per key (429 where the server can answer it, else close 1008), and messages."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
import websockets
from fastapi import Depends, FastAPI, WebSocket, WebSocketDisconnect
from starlette.testclient import TestClient, WebSocketDenialResponse
from websockets.exceptions import ConnectionClosed, InvalidStatus

import opskit
from opskit.ratelimit import RateLimit
from tests.conftest import LogReader
from tests.servers import Background, listening_socket, wait_for_port

#: What the endpoint of the message-limited route saw when the connection ended.
CLOSED: list[int] = []


def create() -> FastAPI:
    app = FastAPI()

    @app.websocket("/feed", dependencies=[Depends(RateLimit("2/minute", key="header:X-Api-Key"))])
    async def feed(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    @app.websocket("/chat", dependencies=[Depends(RateLimit("100/minute", messages="3/minute"))])
    async def chat(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send_text("echo " + await websocket.receive_text())
        except WebSocketDisconnect as exc:
            CLOSED.append(exc.code)

    opskit.instrument(app)
    return app


class TestHandshake:
    def test_third_handshake_of_a_key_is_refused_with_429(self, log_lines: LogReader) -> None:
        """2/minute per API key: two connections open, the third gets the HTTP 429 (a denial response) with
        Retry-After, and the access log records its status; another key still connects."""
        with TestClient(create()) as c:
            log_lines()
            for _ in range(2):
                with c.websocket_connect("/feed", headers={"x-api-key": "a"}) as ws:
                    assert ws.receive_text() == "hello"
            with (
                pytest.raises(WebSocketDenialResponse) as refused,
                c.websocket_connect("/feed", headers={"x-api-key": "a"}),
            ):
                pass
            with c.websocket_connect("/feed", headers={"x-api-key": "b"}) as ws:
                assert ws.receive_text() == "hello"
            lines = [line for line in log_lines() if line.get("event") == "websocket"]
        assert refused.value.status_code == 429
        assert refused.value.headers["retry-after"] == "30"
        assert refused.value.json() == {"detail": "Rate limit exceeded: 2 per 1 minute"}
        assert [line["status"] for line in lines] == [101, 101, 429, 101]

    def test_without_denial_responses_the_handshake_is_closed_with_1008(self) -> None:
        """A server that cannot send an HTTP answer to a handshake gets a close with 1008 (policy violation)."""
        app = create()

        async def connect() -> list[MutableMapping[str, Any]]:
            sent: list[MutableMapping[str, Any]] = []
            incoming = [{"type": "websocket.connect"}]

            async def receive() -> dict[str, Any]:
                return incoming.pop(0) if incoming else {"type": "websocket.disconnect", "code": 1000}

            async def send(message: MutableMapping[str, Any]) -> None:
                sent.append(message)

            scope = {
                "type": "websocket",
                "asgi": {"version": "3.0"},
                "path": "/feed",
                "raw_path": b"/feed",
                "query_string": b"",
                "headers": [(b"x-api-key", b"c")],
                "client": ("127.0.0.1", 5000),
                "server": ("127.0.0.1", 80),
                "scheme": "ws",
                "subprotocols": [],
                "extensions": {},
            }
            await app(scope, receive, send)
            return sent

        async def three() -> list[list[MutableMapping[str, Any]]]:
            return [await connect() for _ in range(3)]

        first, second, third = asyncio.run(three())
        assert first[0]["type"] == second[0]["type"] == "websocket.accept"
        assert [m["type"] for m in third] == ["websocket.close"]
        assert third[0]["code"] == 1008


class TestMessages:
    def test_message_over_the_limit_closes_the_connection(self) -> None:
        """3 messages a minute: three are answered, the fourth closes the connection with 1008 and the
        endpoint sees a disconnect with that code."""
        CLOSED.clear()
        with TestClient(create()) as c, c.websocket_connect("/chat") as ws:
            answers = []
            for text in ("a", "b", "c"):
                ws.send_text(text)
                answers.append(ws.receive_text())
            ws.send_text("d")
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_text()
        assert answers == ["echo a", "echo b", "echo c"]
        assert closed.value.code == 1008
        assert CLOSED == [1008]


@pytest.fixture
def server() -> Iterator[str]:
    """The websocket app under a real uvicorn."""
    sock = listening_socket()
    port = sock.getsockname()[1]
    argv = [sys.executable, "-m", "uvicorn", "tests.ratelimit.test_websocket:create", "--factory"]
    proc = Background([*argv, "--fd", str(sock.fileno())], env={"PYTHONUNBUFFERED": "1"}, pass_fds=[sock.fileno()])
    sock.close()
    try:
        wait_for_port(port)
        yield f"ws://127.0.0.1:{port}"
    finally:
        proc.close()


@pytest.mark.slow
class TestServed:
    def test_handshakes_and_messages_through_uvicorn(self, server: str) -> None:
        """Through uvicorn and a real websocket client: the third handshake of a key is an HTTP 429, and a
        connection sending a fourth message in a minute is closed with 1008."""

        async def scenario() -> tuple[list[str], int, list[str], int | None]:
            greetings = []
            for _ in range(2):
                async with websockets.connect(server + "/feed", additional_headers={"x-api-key": "k"}) as ws:
                    greetings.append(str(await ws.recv()))
            try:
                async with websockets.connect(server + "/feed", additional_headers={"x-api-key": "k"}):
                    status = 101
            except InvalidStatus as exc:
                status = exc.response.status_code
            echoes = []
            code = None
            async with websockets.connect(server + "/chat") as ws:
                try:
                    for text in ("a", "b", "c", "d"):
                        await ws.send(text)
                        echoes.append(str(await ws.recv()))
                except ConnectionClosed as exc:
                    code = exc.rcvd.code if exc.rcvd is not None else None
            return greetings, status, echoes, code

        greetings, status, echoes, code = asyncio.run(scenario())
        assert greetings == ["hello", "hello"]
        assert status == 429
        assert echoes == ["echo a", "echo b", "echo c"]
        assert code == 1008
