"""Under a real uvicorn server: IDs on the wire, every stdout line JSON, no duplicate access log."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import httpx2 as httpx
import orjson
import pytest
from websockets.sync.client import connect

from tests.servers import Background, listening_socket, wait_for_port


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Background]]:
    sock = listening_socket()
    port = sock.getsockname()[1]
    proc = Background(
        [sys.executable, "-m", "uvicorn", "tests.apps.served:app", "--fd", str(sock.fileno()), "--log-level", "info"],
        env={"OTEL_SERVICE_NAME": "served", "OPSKIT_LOG_LEVEL": "info", "PYTHONUNBUFFERED": "1"},
        pass_fds=[sock.fileno()],
    )
    sock.close()
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.close()


@pytest.mark.slow
class TestRealServer:
    def test_ids_and_logs_over_http(self, server: tuple[str, Background]) -> None:
        """Over real HTTP: IDs echoed/replaced/added on 200, 422 and 500; logs are pure JSON."""
        base, proc = server
        with httpx.Client(base_url=base) as c:
            assert c.get("/items/1", headers={"X-Request-ID": "wire-1"}).headers["x-request-id"] == "wire-1"
            r = c.get("/items/x", headers={"X-Request-ID": "wire-2"})
            assert (r.status_code, r.headers["x-request-id"]) == (422, "wire-2")
            r = c.get("/boom", headers={"X-Request-ID": "wire-3"})
            assert (r.status_code, r.headers["x-request-id"]) == (500, "wire-3")
            r = c.get("/items/1", headers={"X-Request-ID": "x" * 200})
            assert len(r.headers["x-request-id"]) == 32
            assert c.get("/healthz").status_code == 200
            assert c.get("/sync", headers={"X-Request-ID": "wire-5"}).json()["request_id"] == "wire-5"
            assert c.get("/background", headers={"X-Request-ID": "wire-6"}).status_code == 200
        ws_url = base.replace("http://", "ws://") + "/ws"
        with connect(ws_url, additional_headers={"X-Request-ID": "wire-ws"}) as ws:
            assert ws.response is not None
            assert ws.response.headers["x-request-id"] == "wire-ws"
            ws.send("hi")
            assert ws.recv() == "echo hi True"
        proc.stop()
        out = proc.stdout().splitlines()
        assert out, "the server wrote nothing to stdout"
        parsed = [orjson.loads(line) for line in out]  # every stdout line is JSON
        access = [line for line in parsed if line.get("logger") == "opskit.access" and line["event"] == "request"]
        assert [line["request_id"] for line in access[:3]] == ["wire-1", "wire-2", "wire-3"]
        assert len(access) == 6  # /healthz is not logged, and nothing is logged twice
        assert not [line for line in parsed if line.get("logger") == "uvicorn.access"]
        boom = [line for line in parsed if line.get("request_id") == "wire-3"]
        assert {line["event"] for line in boom} >= {"about to fail", "unhandled exception", "request"}
        # uvicorn's own copy of the traceback (without request context) is dropped
        assert not [line for line in parsed if "Exception in ASGI application" in str(line.get("event"))]
        assert any(line.get("logger") == "uvicorn.error" for line in parsed)
        assert all(line["service"] == "served" for line in parsed)
        events = {(line["event"], line.get("request_id")) for line in parsed}
        assert ("sync endpoint", "wire-5") in events
        assert ("background job ran", "wire-6") in events
        assert ("websocket", "wire-ws") in events


def _startup_lines(*flags: str) -> list[dict[str, object]]:
    """The JSON lines a plain uvicorn serving the test app writes up to its first answer."""
    sock = listening_socket()
    port = sock.getsockname()[1]
    proc = Background(
        [sys.executable, "-m", "uvicorn", "tests.apps.served:app", "--fd", str(sock.fileno()), *flags],
        env={"PYTHONUNBUFFERED": "1"},
        pass_fds=[sock.fileno()],
    )
    sock.close()
    try:
        wait_for_port(port)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        proc.stop()
        return [orjson.loads(line) for line in proc.stdout().splitlines()]
    finally:
        proc.close()


@pytest.mark.slow
class TestServerProxyHeaders:
    def test_plain_uvicorn_trusting_localhost_is_named_at_startup(self) -> None:
        """uvicorn applies X-Forwarded-For from 127.0.0.1 by default: one warning says so, naming the peers."""
        warnings = [line for line in _startup_lines() if "applies X-Forwarded-For" in str(line["event"])]
        assert len(warnings) == 1 and "127.0.0.1" in str(warnings[0]["peers"]).split(",")

    def test_no_warning_without_proxy_headers(self) -> None:
        """uvicorn --no-proxy-headers leaves them to opskit: nothing to warn about."""
        lines = _startup_lines("--no-proxy-headers")
        assert lines and not [line for line in lines if "applies X-Forwarded-For" in str(line["event"])]


@pytest.mark.slow
class TestClientDisconnects:
    def test_a_client_gone_midway_is_recorded_as_a_disconnect(self) -> None:
        """A stream the client abandons and a request whose client left before the answer are logged
        as 499 with outcome client_disconnected and the bytes actually handed to the server."""
        import threading
        import time

        sock = listening_socket()
        port = sock.getsockname()[1]
        proc = Background(
            [sys.executable, "-m", "uvicorn", "tests.apps.served:app", "--fd", str(sock.fileno())],
            env={"PYTHONUNBUFFERED": "1"},
            pass_fds=[sock.fileno()],
        )
        sock.close()
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for_port(port)
            with httpx.stream("GET", base + "/long-stream", headers={"X-Request-ID": "gone-stream"}) as r:
                got = 0
                for chunk in r.iter_raw():
                    got += len(chunk)
                    if got > 3000:
                        break  # the client leaves after 3 of 50 KiB

            def impatient() -> None:
                with contextlib.suppress(httpx.TimeoutException):
                    httpx.get(base + "/long-poll", headers={"X-Request-ID": "gone-poll"}, timeout=0.3)

            waiter = threading.Thread(target=impatient)
            waiter.start()
            waiter.join(5)
            assert httpx.get(base + "/long-stream", headers={"X-Request-ID": "complete"}).status_code == 200
            time.sleep(1.0)  # the abandoned requests end on their own
            proc.stop()
            lines = [orjson.loads(line) for line in proc.stdout().splitlines()]
        finally:
            proc.close()
        access = {line["request_id"]: line for line in lines if line.get("logger") == "opskit.access"}
        stream, poll, complete = access["gone-stream"], access["gone-poll"], access["complete"]
        assert (stream["status"], stream["outcome"], stream["response_status"]) == (499, "client_disconnected", 200)
        assert 3000 <= stream["response_bytes"] < 50 * 1024
        assert (poll["status"], poll["outcome"]) == (499, "client_disconnected")
        assert (complete["status"], complete.get("outcome"), complete["response_bytes"]) == (200, None, 50 * 1024)
