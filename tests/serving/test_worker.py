"""The gunicorn worker under signals: draining SIGTERM, JSON logs, timed-out workers."""

from __future__ import annotations

import contextlib
import http.client
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.serving.asgi_apps import STARTED_MARKER
from tests.serving.processes import children, events, json_lines, opskit_serve, wait_until

APP = "tests.serving.asgi_apps:instrumented"
GRACEFUL_TIMEOUT = 15

pytestmark = pytest.mark.slow


def request(port: int, path: str, timeout: float = 10) -> int:
    """The status of ``GET path`` on a new connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


class TestGracefulShutdown:
    def test_sigterm_drains_in_flight_request(self, tmp_path: Path) -> None:
        """SIGTERM: /readyz turns 503, the listener then closes, the 2 s request still gets 200, exit 0."""
        marker = tmp_path / "started"
        env = {
            "WEB_CONCURRENCY": "1",
            "OPSKIT_SHUTDOWN_DELAY": "1",
            "GRACEFUL_TIMEOUT": str(GRACEFUL_TIMEOUT),
            STARTED_MARKER: str(marker),
        }
        with opskit_serve(APP, env) as (process, port):
            assert request(port, "/readyz") == 200
            slow: list[int] = []
            client = threading.Thread(target=lambda: slow.append(request(port, "/slow")))
            client.start()
            wait_until(marker.exists, what="the slow request to start")

            process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + GRACEFUL_TIMEOUT
            seen: list[int | str] = []
            while time.monotonic() < deadline:
                try:
                    status = request(port, "/readyz", timeout=2)
                except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected):
                    # Refused once the listener is closed; reset if accepted into the backlog just before.
                    seen.append("refused")
                    break
                if status != 200:
                    seen.append(status)
            refused_while_in_flight = not slow

            client.join(GRACEFUL_TIMEOUT)
            assert process.wait(GRACEFUL_TIMEOUT) == 0
            assert slow == [200]
            assert 503 in seen and seen[-1] == "refused"
            assert set(seen) <= {503, "refused"}
            assert refused_while_in_flight
            # Every line of stdout and stderr, gunicorn's and uvicorn's included, is JSON.
            lines = json_lines(process.stdout()) + json_lines(process.stderr())
            loggers = {line.get("logger") for line in lines}
            assert {"gunicorn.error", "uvicorn.error", "opskit.serving"} <= loggers
            assert any(line.get("event") == "Handling signal: term" for line in lines)


class TestTimeout:
    def test_blocked_worker_is_aborted_and_reported(self) -> None:
        """A worker whose event loop blocks past TIMEOUT is killed, logged with its request, and replaced."""
        with opskit_serve(APP, {"WEB_CONCURRENCY": "1", "TIMEOUT": "2"}) as (process, port):
            wait_until(lambda: len(children(process.pid)) == 1, what="the worker")
            [first] = children(process.pid)
            client = threading.Thread(target=lambda: _ignore_errors(port, "/block"), daemon=True)
            client.start()
            wait_until(
                lambda: any(e.get("event") == "worker aborted" for e in events(process)), timeout=20, what="the abort"
            )
            [aborted] = [e for e in events(process) if e.get("event") == "worker aborted"]
            assert aborted["level"] == "error"
            assert aborted["pid"] == first
            assert [(r["method"], r["path"]) for r in aborted["requests_in_flight"]] == [("GET", "/block")]
            wait_until(lambda: children(process.pid) - {first} != set(), what="a replacement worker")
            assert request(port, "/") == 200
            client.join(15)


def _ignore_errors(port: int, path: str) -> None:
    with contextlib.suppress(OSError, http.client.HTTPException):
        request(port, path, timeout=15)
