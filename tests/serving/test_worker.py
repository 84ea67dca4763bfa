"""The gunicorn worker under signals: draining SIGTERM, JSON logs, timed-out workers."""

from __future__ import annotations

import contextlib
import http.client
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.servers import ROOT, Background, free_port
from tests.serving.processes import STARTED_MARKER, children, events, json_lines, opskit_serve, wait_until

APP = "tests.serving.asgi_apps:instrumented"
GRACEFUL_TIMEOUT = 15

pytestmark = pytest.mark.slow


def request(port: int, path: str, timeout: float = 10, headers: dict[str, str] | None = None) -> int:
    """The status of ``GET path`` on a new connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
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
            assert {"gunicorn.error", "uvicorn.error", "opskit.serving", "opskit.access"} <= loggers
            assert "uvicorn.access" not in loggers and "gunicorn.access" not in loggers
            assert any(line.get("event") == "Handling signal: term" for line in lines)

    def test_overrunning_request_is_cancelled_by_the_worker(self, tmp_path: Path) -> None:
        """A request outliving GRACEFUL_TIMEOUT is cancelled by the worker, which still exits cleanly."""
        marker = tmp_path / "started"
        env = {"WEB_CONCURRENCY": "1", "GRACEFUL_TIMEOUT": "3", STARTED_MARKER: str(marker)}
        with opskit_serve(APP, env) as (process, port):
            client = threading.Thread(target=lambda: _ignore_errors(port, "/hang"), daemon=True)
            client.start()
            wait_until(lambda: len(children(process.pid)) == 1, what="the worker")
            [worker] = children(process.pid)
            wait_until(marker.exists, what="the request to start")
            process.send_signal(signal.SIGTERM)
            assert process.wait(GRACEFUL_TIMEOUT) == 0
            lines = events(process)
            assert any(str(e.get("event")).startswith("Cancel 1 running task") for e in lines)
            assert any(e.get("event") == f"Worker exiting (pid: {worker})" for e in lines)
            assert not any("SIGKILL" in str(e.get("event")) for e in lines)
            client.join(15)

    def test_requests_cancelled_at_the_deadline_are_answered_by_opskit(self) -> None:
        """Requests still running at GRACEFUL_TIMEOUT get opskit's 503 with their request ID, one access line
        each saying they were cancelled, and no traceback."""
        with opskit_serve(APP, {"WEB_CONCURRENCY": "1", "GRACEFUL_TIMEOUT": "4"}) as (process, port):
            answers: list[tuple[int, str | None]] = []

            def hang(i: int) -> None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
                try:
                    conn.request("GET", "/hang", headers={"X-Request-ID": f"hang-{i}"})
                    response = conn.getresponse()
                    response.read()
                    answers.append((response.status, response.getheader("x-request-id")))
                finally:
                    conn.close()

            clients = [threading.Thread(target=hang, args=(i,)) for i in range(10)]
            for client in clients:
                client.start()
            time.sleep(1.0)  # every request is inside the app
            process.send_signal(signal.SIGTERM)
            for client in clients:
                client.join(20)
            assert process.wait(GRACEFUL_TIMEOUT) == 0
            lines = events(process)
        assert sorted(answers) == sorted((503, f"hang-{i}") for i in range(10))
        access = [line for line in lines if line.get("logger") == "opskit.access" and line.get("path") == "/hang"]
        assert sorted(line["request_id"] for line in access) == sorted(f"hang-{i}" for i in range(10))
        assert {(line["status"], line["outcome"]) for line in access} == {(503, "cancelled")}
        assert not [line for line in lines if "CancelledError" in str(line) or "Exception in ASGI" in str(line)]


class TestStopWhileBooting:
    def test_sigterm_during_worker_boot_is_not_lost(self, tmp_path: Path) -> None:
        """SIGTERM reaching a worker before its handlers exist still stops it: no wait for the SIGKILL."""
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:tests.serving.slow_fork_conf",
            "tests.serving.asgi_apps:plain",
        ]
        env = {"WEB_CONCURRENCY": "1", "BIND": f"127.0.0.1:{port}", "GRACEFUL_TIMEOUT": "10", "TMPDIR": str(tmp_path)}
        process = Background(argv, env=env, cwd=ROOT)
        try:
            wait_until(
                lambda: any(str(e.get("event")).startswith("Booting worker") for e in events(process)),
                what="the worker fork",
            )
            process.stop(signal.SIGTERM, timeout=GRACEFUL_TIMEOUT)  # the whole group, worker included
            lines = events(process)
            assert any(str(e.get("event")).startswith("Worker exiting") for e in lines)
            assert not any("SIGKILL" in str(e.get("event")) for e in lines)
            assert not any(e.get("event") == "Application startup complete." for e in lines)
        finally:
            process.close()


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
            [in_flight] = aborted["requests_in_flight"]
            assert (in_flight["method"], in_flight["path"], in_flight["request_id"]) == ("GET", "/block", "blocked-1")
            wait_until(lambda: children(process.pid) - {first} != set(), what="a replacement worker")
            assert request(port, "/") == 200
            client.join(15)


def _ignore_errors(port: int, path: str) -> None:
    with contextlib.suppress(OSError, http.client.HTTPException):
        request(port, path, timeout=15, headers={"X-Request-ID": "blocked-1"})


def access_lines(process: Background, path: str) -> list[dict[str, Any]]:
    return [e for e in events(process) if e.get("logger") == "opskit.access" and e.get("path") == path]


class TestProxyHeaders:
    def test_forwarded_headers_ignored_by_default(self) -> None:
        """With no trusted peer, X-Forwarded-For from 127.0.0.1 changes nothing: the client is the peer."""
        with opskit_serve(APP, {"WEB_CONCURRENCY": "1"}) as (process, port):
            assert request(port, "/", headers={"X-Forwarded-For": "203.0.113.7"}) == 200
            wait_until(lambda: bool(access_lines(process, "/")), what="the access line")
            assert access_lines(process, "/")[0]["client"] == "127.0.0.1"

    def test_forwarded_allow_ips_applies_them(self) -> None:
        """FORWARDED_ALLOW_IPS=127.0.0.1 makes opskit take the client from X-Forwarded-For."""
        with opskit_serve(APP, {"WEB_CONCURRENCY": "1", "FORWARDED_ALLOW_IPS": "127.0.0.1"}) as (process, port):
            assert request(port, "/", headers={"X-Forwarded-For": "203.0.113.7"}) == 200
            wait_until(lambda: bool(access_lines(process, "/")), what="the access line")
            assert access_lines(process, "/")[0]["client"] == "203.0.113.7"

    def test_a_malformed_hop_never_becomes_the_client(self) -> None:
        """With trusted proxies set, garbage in X-Forwarded-For is neither the logged client nor a way past a
        limit: every request counts against the last good address (the proxy's here)."""
        env = {"WEB_CONCURRENCY": "2", "OPSKIT_TRUSTED_PROXIES": "127.0.0.1", "OPSKIT_RATE_LIMIT": "20/minute"}
        with opskit_serve(APP, env) as (process, port):
            codes = [request(port, "/", headers={"X-Forwarded-For": f"1.2.3.4, bogus-{i}"}) for i in range(100)]
            wait_until(lambda: len(access_lines(process, "/")) == 100, what="100 access lines")
            clients = {line["client"] for line in access_lines(process, "/")}
        assert codes.count(200) <= 20 * 2 + 1  # per worker without Redis; never 100
        assert clients == {"127.0.0.1"}


class TestAccessLog:
    def test_no_server_access_log_when_opskit_is_off(self) -> None:
        """With opskit's access log switched off, neither uvicorn nor gunicorn writes one instead."""
        with opskit_serve(APP, {"WEB_CONCURRENCY": "1", "OPSKIT_ACCESS_LOG_ENABLED": "false"}) as (process, port):
            assert request(port, "/") == 200
            assert request(port, "/healthz") == 200
            process.stop(signal.SIGTERM, timeout=20)
            loggers = {e.get("logger") for e in events(process)}
            assert "uvicorn.error" in loggers
            assert not loggers & {"uvicorn.access", "gunicorn.access", "opskit.access"}


class TestLoggingSwitchedOff:
    def test_gunicorn_logs_as_usual(self) -> None:
        """OPSKIT_LOGGING_ENABLED=false leaves gunicorn's and uvicorn's own log format alone."""
        with opskit_serve(APP, {"WEB_CONCURRENCY": "1", "OPSKIT_LOGGING_ENABLED": "false"}) as (process, port):
            assert request(port, "/") == 200
            process.stop(signal.SIGTERM, timeout=20)
            err = process.stderr()
            assert "[INFO] Starting gunicorn" in err
            assert "Application startup complete." in err
            assert '"event"' not in process.stdout() + err


class TestStartupDelay:
    def test_listener_opens_after_the_delay(self) -> None:
        """OPSKIT_STARTUP_DELAY is logged before the listener opens; then the server answers."""
        with opskit_serve(APP, {"WEB_CONCURRENCY": "1", "OPSKIT_STARTUP_DELAY": "0.5"}) as (process, port):
            assert request(port, "/healthz") == 200
            names = [e.get("event") for e in events(process)]
            delay = names.index("start-up delay")
            assert any(str(n).startswith("Listening at") for n in names[delay:])
