"""Runtime health under real servers: uvicorn (asyncio loop) and `opskit serve` (gunicorn, uvloop workers)."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.metrics.parsing import parse_text
from tests.servers import ROOT, Background, listening_socket, wait_for_port
from tests.serving.processes import children, events, opskit_serve, wait_until
from tests.tracing.receiver import OtlpReceiver, otlp_receiver

pytestmark = pytest.mark.slow

APP = "tests.loop.app:app"
APP_SOURCE = ROOT / "tests" / "loop" / "app.py"


def source_line(needle: str) -> int:
    """The line number of the app's line containing ``needle``."""
    for number, line in enumerate(APP_SOURCE.read_text().splitlines(), 1):
        if needle in line:
            return number
    raise LookupError(needle)


BLOCKING_NEEDLE = "time.sleep(seconds)  # noqa: ASYNC251"
BLOCKING_LINE = f"tests/loop/app.py:{source_line(BLOCKING_NEEDLE)} in block: {BLOCKING_NEEDLE}"


class Uvicorn:
    """``uvicorn tests.loop.app:app`` on a socket of its own, asyncio loop, JSON logs on stdout."""

    def __init__(self, env: dict[str, str] | None = None, *, lifespan: bool = True) -> None:
        sock = listening_socket()
        self.port = sock.getsockname()[1]
        argv = [sys.executable, "-m", "uvicorn", APP, "--fd", str(sock.fileno()), "--loop", "asyncio"]
        if not lifespan:
            argv += ["--lifespan", "off"]
        self.process = Background(argv, env=env, cwd=ROOT, pass_fds=[sock.fileno()])
        sock.close()
        self.url = f"http://127.0.0.1:{self.port}"
        try:
            wait_for_port(self.port)
            if lifespan:
                wait_until(lambda: any(e.get("event") == "Application startup complete." for e in events(self.process)))
        except BaseException:
            self.process.close()
            raise


@contextlib.contextmanager
def uvicorn(env: dict[str, str] | None = None, *, lifespan: bool = True) -> Iterator[Uvicorn]:
    server = Uvicorn(env, lifespan=lifespan)
    try:
        yield server
    finally:
        server.process.close()


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one scrape, by name and sorted labels."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in parse_text(text) for s in family.samples}


def sample(url: str, name: str, **labels: str) -> float:
    return samples(url).get((name, tuple(sorted(labels.items()))), 0.0)


def blocked_lines(process: Background) -> list[dict[str, Any]]:
    return [e for e in events(process) if e.get("event") == "event loop blocked"]


def _named(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lines that name a request."""
    return [line for line in lines if line["request_id"] is not None]


def get(url: str, path: str, request_id: str, timeout: float = 10) -> int:
    return httpx.get(f"{url}{path}", headers={"X-Request-ID": request_id}, timeout=timeout).status_code


def check_block_lines(lines: list[dict[str, Any]], expected_ids: set[str]) -> None:
    """One warning per blocking request, naming its route, its ID, the blocking line first.

    A worker's start-up may block its loop too (the app's lifespan, opskit's collection before
    ``gc.freeze()``): such lines name no request and the route ``__none__``.
    """
    outside = [line for line in lines if line["request_id"] is None]
    assert {line["route"] for line in outside} <= {"__none__"}
    lines = [line for line in lines if line["request_id"] is not None]
    assert sorted(line["request_id"] for line in lines) == sorted(expected_ids)
    for line in lines:
        assert line["level"] == "warning" and line["logger"] == "opskit.loop"
        assert line["route"] == "/block" and line["method"] == "GET"
        assert line["stack"][0].startswith(BLOCKING_LINE), line["stack"]
        assert 100 <= line["blocked_ms"] < 300


class TestBlockedLoop:
    def test_uvicorn_names_each_blocking_request(self) -> None:
        """Three blocking requests among fast ones: three lines naming /block and each ID; the counter says 3."""
        with uvicorn() as server:
            for n in range(3):
                assert get(server.url, "/fast", f"fast-{n}") == 200
                assert get(server.url, "/block", f"block-{n}") == 200
                assert get(server.url, "/fast", f"fast-late-{n}") == 200
            wait_until(lambda: len(blocked_lines(server.process)) >= 3, timeout=5, what="three lines")
            time.sleep(0.3)
            lines = blocked_lines(server.process)
            check_block_lines(lines, {"block-0", "block-1", "block-2"})
            assert sample(server.url, "opskit_event_loop_blocked_total", route="/block") == 3
            assert sample(server.url, "opskit_event_loop_blocked_total", route="/fast") == 0
            assert sample(server.url, "opskit_event_loop_blocked_seconds_count") == 3
            assert 0.6 <= sample(server.url, "opskit_event_loop_blocked_seconds_sum") <= 1.0
            assert sample(server.url, "opskit_event_loop_lag_seconds_count") > 10

    def test_opskit_serve_workers_name_each_blocking_request(self) -> None:
        """Under `opskit serve` (2 uvloop workers): one line per blocking request; one scrape counts them all."""
        with opskit_serve(APP, {"WEB_CONCURRENCY": "2"}) as (process, port):
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: len(children(process.pid)) == 2, what="two workers")
            wait_until(lambda: _answers(url), what="the workers")
            ids = {f"served-{n}" for n in range(4)}
            with ThreadPoolExecutor(2) as pool:  # two at a time: both workers get to block
                assert set(pool.map(lambda rid: get(url, "/block", rid), sorted(ids))) == {200}
            for n in range(3):
                assert get(url, "/fast", f"fast-{n}") == 200
            wait_until(lambda: len(_named(blocked_lines(process))) >= 4, timeout=5, what="four lines")
            time.sleep(0.3)
            lines = blocked_lines(process)
            check_block_lines(lines, ids)
            assert len({line["pid"] for line in _named(lines)}) == 2
            assert sample(url, "opskit_event_loop_blocked_total", route="/block") == 4

    def test_a_replacement_worker_watches_its_own_loop(self) -> None:
        """A worker killed and forked anew by the master has a watchdog of its own."""
        with opskit_serve(APP, {"WEB_CONCURRENCY": "1"}) as (process, port):
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: len(children(process.pid)) == 1, what="the worker")
            [first] = children(process.pid)
            wait_until(lambda: _answers(url), what="the worker")
            assert get(url, "/block", "before-fork") == 200
            import os

            os.kill(first, signal.SIGKILL)
            wait_until(lambda: children(process.pid) - {first} != set(), what="a replacement worker")
            wait_until(lambda: _answers(url), what="the replacement")
            assert get(url, "/block", "after-fork") == 200
            wait_until(lambda: len(_named(blocked_lines(process))) >= 2, timeout=5, what="two lines")
            before, after = _named(blocked_lines(process))
            assert (before["request_id"], before["pid"]) == ("before-fork", first)
            assert after["request_id"] == "after-fork" and after["pid"] in children(process.pid)

    def test_a_block_past_the_timeout_is_reported_before_the_kill(self) -> None:
        """A request blocking past gunicorn's TIMEOUT is named by the watchdog before the master aborts the worker."""
        with opskit_serve(APP, {"WEB_CONCURRENCY": "1", "TIMEOUT": "2"}) as (process, port):
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: _answers(url), what="the worker")
            client = threading.Thread(target=_ignore_errors, args=(url, "/block?seconds=30", "stuck-1"), daemon=True)
            client.start()
            wait_until(
                lambda: any(e.get("event") == "worker aborted" for e in events(process)), timeout=20, what="the abort"
            )
            [line] = _named(blocked_lines(process))
            [aborted] = [e for e in events(process) if e.get("event") == "worker aborted"]
            assert line["request_id"] == "stuck-1" and line["route"] == "/block"
            assert line["stack"][0].startswith(BLOCKING_LINE)
            assert line["timestamp"] < aborted["timestamp"]
            client.join(15)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _ignore_errors(url: str, path: str, request_id: str) -> None:
    with contextlib.suppress(httpx.HTTPError):
        get(url, path, request_id, timeout=15)


class TestWithoutLifespan:
    def test_the_probes_start_with_the_first_request(self) -> None:
        """uvicorn --lifespan off: the first request starts the lag probe and the watchdog, which
        then names a blocking request as under lifespan."""
        with uvicorn(lifespan=False) as server:
            assert get(server.url, "/fast", "fast-0") == 200
            assert get(server.url, "/block", "block-0") == 200
            wait_until(lambda: len(_named(blocked_lines(server.process))) >= 1, timeout=5, what="the line")
            check_block_lines(blocked_lines(server.process), {"block-0"})
            assert sample(server.url, "opskit_event_loop_blocked_total", route="/block") == 1
            wait_until(
                lambda: sample(server.url, "opskit_event_loop_lag_seconds_count") > 0, timeout=5, what="lag samples"
            )


class TestThreadPool:
    def test_sixty_calls_on_forty_threads(self) -> None:
        """60 concurrent 2 s `def` calls, pool at 40: 40 busy and about 20 waiting, waits recorded, one warning."""
        env = {"OPSKIT_THREADPOOL_SIZE": "40", "OPSKIT_RUNTIME_THREADPOOL_SATURATED_THRESHOLD": "0.3"}
        with uvicorn(env) as server, ThreadPoolExecutor(60) as pool:
            limits = httpx.Limits(max_connections=100)
            with httpx.Client(limits=limits, timeout=20) as client:
                calls = [pool.submit(client.get, f"{server.url}/sync", params={"seconds": "2"}) for _ in range(60)]
                seen: list[tuple[float, float]] = []

                def saturated() -> bool:
                    now = samples(server.url)
                    seen.append(
                        (now[("opskit_threadpool_busy_threads", ())], now[("opskit_threadpool_waiting_tasks", ())])
                    )
                    return seen[-1][1] >= 15

                # Holding each thread 2 s leaves a loaded machine time to open all 60 calls.
                wait_until(saturated, timeout=10, what="waiting calls")
                busy, waiting = seen[-1]
                assert busy == 40 and 15 <= waiting <= 20
                assert sample(server.url, "opskit_threadpool_max_threads") == 40
                assert {call.result().status_code for call in calls} == {200}
            time.sleep(0.2)
            now = samples(server.url)
            assert now[("opskit_threadpool_busy_threads", ())] == 0
            assert now[("opskit_threadpool_waiting_tasks", ())] == 0
            # Each call borrows a thread for the route, and FastAPI a second time to validate a sync route's response.
            assert now[("opskit_threadpool_wait_seconds_count", ())] == 120
            waited = (
                now[("opskit_threadpool_wait_seconds_count", ())]
                - now[("opskit_threadpool_wait_seconds_bucket", (("le", "0.5"),))]
            )
            assert 15 <= waited <= 20  # the calls that queued waited up to 2 s
            assert now[("opskit_threadpool_wait_seconds_bucket", (("le", "0.001"),))] >= 40
            [warning] = [e for e in events(server.process) if e.get("event") == "thread pool saturated"]
            assert warning["level"] == "warning" and warning["size"] == 40 and warning["busy"] == 40


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as r:
        yield r


class TestBackgroundTasks:
    def test_duration_failure_span_and_line(self, receiver: OtlpReceiver) -> None:
        """A slow and a failing task: histogram, counter, child spans of the request's span, the failure line."""
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        with uvicorn(env) as server:
            assert get(server.url, "/background", "bg-1") == 200
            spans = receiver.wait_for(3)
            by_name = {span.name: span for span in spans}
            server_span = by_name["GET /background"]
            slow = by_name["background slow_in_background"]
            failed = by_name["background fail_in_background"]
            for child in (slow, failed):
                assert child.trace_id == server_span.trace_id
                assert child.parent_span_id == server_span.span_id
            assert slow.end_ns - slow.start_ns >= 200_000_000
            assert failed.is_error and [name for name, _ in failed.events] == ["exception"]
            assert not slow.is_error
            wait_until(lambda: _failure_lines(server.process) != [], what="the failure line")
            [line] = _failure_lines(server.process)
            assert line["level"] == "error" and line["task"] == "fail_in_background"
            assert line["request_id"] == "bg-1" and line["exception_type"] == "ValueError"
            now = samples(server.url)
            slow_labels = (("task", "slow_in_background"),)
            failed_labels = (("task", "fail_in_background"),)
            assert now[("opskit_background_task_duration_seconds_count", slow_labels)] == 1
            assert now[("opskit_background_task_duration_seconds_sum", slow_labels)] >= 0.2
            assert now[("opskit_background_task_failures_total", failed_labels)] == 1
            assert now[("opskit_background_task_failures_total", slow_labels)] == 0
            # The request's own measurements still end with its body, before the tasks ran.
            route = (("method", "GET"), ("route", "/background"))
            assert now[("http_request_duration_seconds_sum", route)] < 0.2
            [access] = [e for e in events(server.process) if e.get("logger") == "opskit.access"]
            assert access["duration_ms"] < 200


def _failure_lines(process: Background) -> list[dict[str, Any]]:
    return [e for e in events(process) if e.get("event") == "background task failed"]


class TestShutdown:
    def test_sigterm_stops_the_watchdog_without_a_hang(self) -> None:
        """SIGTERM: lifespan shutdown stops the watchdog; the server exits at once, with no false block."""
        with uvicorn() as server:
            assert get(server.url, "/fast", "fast") == 200
            start, signalled = time.monotonic(), datetime.now(timezone.utc)
            assert server.process.stop(signal.SIGTERM, timeout=10) in (0, -signal.SIGTERM)  # uvicorn re-raises it
            assert time.monotonic() - start < 3
            # (A start-up of a loaded machine may block past the threshold: that is a true block.)
            after = [
                line
                for line in blocked_lines(server.process)
                if datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")) >= signalled
            ]
            assert after == []


def test_app_source_is_where_the_tests_expect() -> None:
    """The blocking line the tests look for is in the app (the stack assertions depend on it)."""
    assert Path(APP_SOURCE).exists() and "in block: time.sleep(seconds)" in BLOCKING_LINE
