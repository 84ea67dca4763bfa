"""The pieces of the runtime-health feature, each on real frames, tasks, threads and limiters."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib.util
import math
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from types import FrameType
from typing import Any

import anyio
import pytest
import structlog
from anyio import to_thread
from structlog.testing import capture_logs

from opskit.load import LoadReadings
from opskit.loop import (
    BoundedLabels,
    LagProbe,
    LineBudget,
    LoopMetrics,
    Watchdog,
    format_stack,
    measure_waits,
    task_name,
)
from opskit.loop.busy import LoopBusyShare
from opskit.loop.stack import FRAMEWORK_PACKAGES
from opskit.loop.threadpool import ThreadPoolMonitor
from opskit.loop.watchdog import task_context, task_frame
from opskit.metrics.registry import Registry
from opskit.routes import RouteTemplates
from opskit.runtime import Runtime
from opskit.settings import load_settings
from tests.servers import ROOT

HERE = Path(__file__).name


def value(registry: Registry, name: str, labels: tuple[str, ...] = (), index: int = 0) -> float:
    """One merged value of a metric (``index`` into a histogram's buckets; ``-1`` is the sum)."""
    for metric, series in registry.collect():
        if metric.name == name:
            for s in series:
                if s.labels == labels:
                    return s.data.values[index]
    raise KeyError((name, labels))


def histogram_count(registry: Registry, name: str, labels: tuple[str, ...] = ()) -> float:
    for metric, series in registry.collect():
        if metric.name == name:
            for s in series:
                if s.labels == labels:
                    return sum(s.data.values[:-1])
    return 0.0


def qualified(name: str) -> str:
    """A function's name as a stack line shows it: qualified from Python 3.11 on (``co_qualname``)."""
    return name if sys.version_info >= (3, 11) else name.rpartition(".")[2]


class TestStackTrimming:
    def test_framework_frames_are_left_out_innermost_first(self) -> None:
        """contextlib and asyncio frames between the app's frames are trimmed; the innermost app frame is first."""
        seen: list[str] = []

        @contextlib.contextmanager
        def inner() -> Iterator[None]:
            seen.extend(format_stack(sys._getframe(), 5))  # the marker line
            yield

        async def handler() -> None:
            with inner():
                pass

        asyncio.run(handler())
        assert seen[0].startswith(f"tests/loop/{HERE}:")
        assert (
            f"in {qualified('TestStackTrimming.test_framework_frames_are_left_out_innermost_first.<locals>.inner')}:"
            in seen[0]
        )
        assert "the marker line" in seen[0]
        assert "handler" in seen[1]
        assert [line.split(":")[0] for line in seen[:3]] == [f"tests/loop/{HERE}"] * 3
        assert "asyncio.run(handler())" in seen[2]

    def test_stack_stops_at_the_task_coroutine(self) -> None:
        """With the running task's coroutine as the outer bound, nothing of the loop's caller (pytest) is shown."""
        lines: list[str] = []

        async def handler() -> None:
            lines.extend(format_stack(sys._getframe(), 20, outermost=task_frame(asyncio.current_task())))

        async def main() -> None:
            await handler()

        asyncio.run(main())
        assert [line.split(" in ")[1].split(":")[0] for line in lines] == [
            qualified("TestStackTrimming.test_stack_stops_at_the_task_coroutine.<locals>.handler"),
            qualified("TestStackTrimming.test_stack_stops_at_the_task_coroutine.<locals>.main"),
        ]

    def test_only_framework_frames_are_shown_untrimmed(self) -> None:
        """A block inside the framework itself still shows where the loop was."""
        frame = _framework_frame()
        lines = format_stack(frame, 3, outermost=frame)
        assert lines and "asyncio" in lines[0]

    def test_stack_lines_are_escaped_and_bounded(self, tmp_path: Path) -> None:
        """Control and non-ASCII characters in a source line are escaped; long lines are cut."""
        source = tmp_path / "oddmodule.py"
        source.write_text(
            "import sys\n\ndef f():\n    return sys._getframe()  # caf\u00e9 \u2028 " + "x" * 400 + "\n", "utf-8"
        )
        spec = importlib.util.spec_from_file_location("oddmodule", source)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        [line, *_] = format_stack(module.f(), 1)
        assert "\\xe9" in line and "\\u2028" in line
        assert line.isascii() and line.isprintable()
        assert line.endswith("...") and len(line) < 400

    def test_framework_list_names_the_usual_scaffolding(self) -> None:
        """opskit, asyncio and the server and framework packages are trimmed; the app's packages are not."""
        assert {"opskit", "asyncio", "starlette", "fastapi", "anyio", "uvicorn", "uvloop"} <= FRAMEWORK_PACKAGES
        assert "tests" not in FRAMEWORK_PACKAGES


def _framework_frame() -> FrameType:
    # A frame whose module is asyncio's: a frame of asyncio.run's own code.
    captured: list[FrameType] = []

    async def probe() -> None:
        frame = sys._getframe()
        while frame is not None and not frame.f_globals.get("__name__", "").startswith("asyncio"):
            frame = frame.f_back  # type: ignore[assignment]
        captured.append(frame)

    asyncio.run(probe())
    return captured[0]


class TestBoundedLabels:
    def test_cap_then_other_and_counted(self) -> None:
        """The first ``cap`` names are kept; later ones are ``other``, each use counted."""
        labels = BoundedLabels(2)
        assert [labels(v) for v in ("a", "b", "a", "c", "d", "c")] == ["a", "b", "a", "other", "other", "other"]
        assert labels.overflowed == 3

    def test_task_names_are_qualified_names(self) -> None:
        """A task's label is its function's qualified name, through functools.partial."""
        import functools

        assert task_name(functools.partial(functools.partial(task_name, 1))) == "task_name"
        assert task_name(len) == "len"


class TestLineBudget:
    def test_bounded_rate_counts_what_it_drops(self) -> None:
        """Two lines a minute: the third and fourth are refused and counted; the next allowed one says how many."""
        now = [0.0]
        budget = LineBudget(2, clock=lambda: now[0])
        assert [budget.take(), budget.take(), budget.take(), budget.take()] == [0, 0, None, None]
        assert budget.suppressed_total == 2
        now[0] = 30.0  # one token back
        assert budget.take() == 2
        assert budget.take() is None


class TestTaskContext:
    def test_request_id_of_a_task_read_from_another_thread(self) -> None:
        """The context of the task a loop thread runs is readable from outside, C task or not."""
        var: contextvars.ContextVar[str | None] = contextvars.ContextVar("var", default=None)
        loop = asyncio.new_event_loop()
        running = threading.Event()
        release = threading.Event()

        async def request() -> None:
            var.set("req-42")
            running.set()
            release.wait(5)  # blocks the loop, as a request would

        thread = threading.Thread(target=loop.run_until_complete, args=(request(),))
        thread.start()
        try:
            assert running.wait(5)
            task = asyncio.current_task(loop)
            assert task is not None
            context = task_context(task)
            assert context is not None and context.get(var) == "req-42"
        finally:
            release.set()
            thread.join(5)
            loop.close()


class TestThreadPoolWaits:
    def test_waits_are_timed_and_free_tokens_record_zero(self) -> None:
        """With one token, the first call waits 0 and the second as long as the first runs."""
        observed: list[float] = []

        async def main() -> None:
            limiter = anyio.CapacityLimiter(1)
            assert measure_waits(limiter, observed.append)
            async with anyio.create_task_group() as group:
                group.start_soon(lambda: to_thread.run_sync(time.sleep, 0.3, limiter=limiter))
                await anyio.sleep(0.05)
                group.start_soon(lambda: to_thread.run_sync(time.sleep, 0.0, limiter=limiter))
            assert limiter.borrowed_tokens == 0

        anyio.run(main)
        assert observed[0] == 0.0
        assert 0.15 < observed[1] < 1.0

    def test_pool_is_sized_at_startup(self) -> None:
        """OPSKIT_THREADPOOL_SIZE sets the running loop's default limiter at startup."""
        from opskit.loop import create_component

        async def main() -> float:
            component = create_component(Runtime(load_settings(threadpool_size=7, runtime_blocked_threshold=0)))
            assert component is not None
            component.process_started()
            try:
                return to_thread.current_default_thread_limiter().total_tokens
            finally:
                await component.shutdown()

        assert asyncio.run(main()) == 7


class FakeCpu:
    """A CPU-time clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class TestLoopBusyShare:
    def share(self, ticks: list[tuple[float, float]], smoothing: float = 1e-9) -> tuple[float | None, LoadReadings]:
        """Feed ``(wall, cpu)`` advances between probe ticks of 50 ms; returns the share and the readings."""
        registry = Registry(None)
        readings = LoadReadings()
        cpu = FakeCpu()
        busy = LoopBusyShare(0.05, LoopMetrics(registry).busy.labels(), readings, smoothing=smoothing, cpu_clock=cpu)
        now = 100.0
        busy.sample(now)
        for wall, used in ticks:
            now += wall
            cpu.now += used
            busy.sample(now)
        registry.close()
        return busy.share, readings

    def test_idle_loop_is_not_busy(self) -> None:
        """Probes on time and no CPU spent: 0."""
        assert self.share([(0.05, 0.0)] * 5)[0] == 0.0

    def test_callbacks_on_the_cpu_count_as_busy(self) -> None:
        """CPU time of the loop's thread over the wall time between probes."""
        assert self.share([(0.06, 0.03)])[0] == pytest.approx(0.5)
        assert self.share([(0.05, 0.05)])[0] == pytest.approx(1.0)

    def test_a_loop_blocked_off_the_cpu_is_busy(self) -> None:
        """A sleep in the loop burns no CPU, but the probe runs late by as long: that part counts as busy."""
        assert self.share([(1.05, 0.0)])[0] == pytest.approx(1.0 / 1.05)

    def test_smoothed_over_about_a_second_and_published(self) -> None:
        """A second of full load after idle shows as about 63 %; the readings carry the same value."""
        share, readings = self.share([(0.05, 0.0)] + [(0.05, 0.05)] * 20, smoothing=1.0)
        assert share == pytest.approx(1 - math.exp(-1.0))
        assert readings.loop_busy == share

    def test_a_real_loop_busy_then_idle(self) -> None:
        """On a real loop, callbacks that spin the CPU raise the share; an idle loop lowers it again."""
        registry = Registry(None)
        metrics = LoopMetrics(registry)
        busy = LoopBusyShare(0.02, metrics.busy.labels(), smoothing=0.2)
        probe = LagProbe(0.02, metrics, samplers=(busy.sample,))

        async def main() -> tuple[float, float]:
            probe.start(asyncio.get_running_loop())
            end = time.monotonic() + 0.6
            while time.monotonic() < end:
                spin = time.thread_time() + 0.01
                while time.thread_time() < spin:
                    pass
                await asyncio.sleep(0)
            loaded = busy.share or 0.0
            await asyncio.sleep(1.0)
            probe.stop()
            return loaded, busy.share or 0.0

        loaded, idle = asyncio.run(main())
        registry.close()
        # However loaded the machine (the spin counts CPU time, the share wall time), the difference shows.
        assert loaded > 0.3
        assert idle < loaded / 2


class TestThreadPoolReadings:
    def test_the_monitor_publishes_busy_threads_and_size(self) -> None:
        """Each sample leaves the pool's borrowed tokens and size in the shared readings."""
        readings = LoadReadings()
        registry = Registry(None)
        monitor = ThreadPoolMonitor(
            LoopMetrics(registry), size=4, saturated_after=60, budget=LineBudget(10), readings=readings
        )

        async def main() -> tuple[int | None, int | None]:
            monitor.start()
            started = threading.Event()
            release = threading.Event()

            def work() -> None:
                started.set()
                release.wait(5)

            async with anyio.create_task_group() as group:
                group.start_soon(lambda: to_thread.run_sync(work))
                await to_thread.run_sync(started.wait, 5)
                monitor.sample(time.monotonic())
                seen = readings.pool_busy, readings.pool_size
                release.set()
            return seen

        assert anyio.run(main) == (1, 4)
        assert readings.pool_share == pytest.approx(0.25)
        registry.close()


class LoopInThread:
    """A real event loop on its own thread, with the lag probe and the watchdog started on it."""

    def __init__(self, *, threshold: float = 0.1, per_minute: int = 60) -> None:
        self.registry = Registry(None)
        self.metrics = LoopMetrics(self.registry)
        self.probe = LagProbe(0.02, self.metrics, late_after=threshold)
        self.watchdog = Watchdog(
            self.probe,
            self.metrics,
            RouteTemplates(object()),
            threshold=threshold,
            stack_depth=5,
            budget=LineBudget(per_minute),
        )
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.probe.start(self.loop)
            self.watchdog.start(self.loop)
            self.loop.call_soon(started.set)
            self.loop.run_forever()

        self.thread = threading.Thread(target=run)
        self.thread.start()
        assert started.wait(5)

    def block(self, seconds: float) -> None:
        done = threading.Event()

        def blocking_callback() -> None:
            time.sleep(seconds)
            done.set()

        self.loop.call_soon_threadsafe(blocking_callback)
        assert done.wait(seconds + 5)

    def close(self) -> None:
        self.watchdog.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.probe.stop()
        self.loop.close()


@pytest.fixture
def looped() -> Iterator[LoopInThread]:
    loop = LoopInThread()
    try:
        yield loop
    finally:
        loop.close()


def blocked_lines(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == "event loop blocked"]


class TestWatchdog:
    def test_one_line_per_block_with_the_blocking_frame(self, looped: LoopInThread) -> None:
        """A 0.3 s block gives exactly one warning, its stack's first frame the blocking callback, and the metrics."""
        with capture_logs() as logs:
            looped.block(0.3)
            time.sleep(0.15)  # the watchdog's next look ends the block
        [line] = blocked_lines(logs)
        assert line["log_level"] == "warning"
        assert 100 <= line["blocked_ms"] <= 300
        assert line["route"] == "__none__" and line["request_id"] is None
        blocking = qualified("LoopInThread.block.<locals>.blocking_callback")
        assert f"in {blocking}: time.sleep(seconds)" in line["stack"][0]
        assert value(looped.registry, "opskit_event_loop_blocked_total", ("__none__",)) == 1
        assert histogram_count(looped.registry, "opskit_event_loop_blocked_seconds") == 1
        assert 0.2 <= value(looped.registry, "opskit_event_loop_blocked_seconds", index=-1) <= 0.35

    def test_short_stalls_are_not_blocks(self, looped: LoopInThread) -> None:
        """Stalls under the threshold are lag, not blocks: no line, no count."""
        with capture_logs() as logs:
            for _ in range(5):
                looped.block(0.03)
            time.sleep(0.1)
        assert blocked_lines(logs) == []
        assert histogram_count(looped.registry, "opskit_event_loop_blocked_seconds") == 0
        assert histogram_count(looped.registry, "opskit_event_loop_lag_seconds") > 5

    def test_a_storm_of_blocks_writes_a_bounded_number_of_lines(self) -> None:
        """Five blocks with a budget of two lines a minute: two lines, three counted as suppressed, five blocks."""
        looped = LoopInThread(per_minute=2)
        try:
            with capture_logs() as logs:
                for _ in range(5):
                    looped.block(0.2)
                    time.sleep(0.06)
            lines = blocked_lines(logs)
            assert len(lines) == 2
            assert value(looped.registry, "opskit_runtime_warnings_suppressed_total", ("blocked",)) == 3
            assert value(looped.registry, "opskit_event_loop_blocked_total", ("__none__",)) == 5
        finally:
            looped.close()

    def test_stop_ends_the_thread(self, looped: LoopInThread) -> None:
        """stop() wakes the watchdog at once and its thread ends."""
        start = time.monotonic()
        looped.watchdog.stop()
        assert not looped.watchdog.running
        assert time.monotonic() - start < 1.0

    def test_a_failing_look_degrades_without_raising(self, looped: LoopInThread) -> None:
        """An exception inside the watchdog is logged once, and the thread keeps watching."""
        original = looped.watchdog.check
        calls = [0]

        def broken(now: float) -> float:
            calls[0] += 1
            if calls[0] <= 3:
                raise RuntimeError("broken look")
            return original(now)

        looped.watchdog.check = broken  # type: ignore[method-assign]
        with capture_logs() as logs:
            looped.block(0.15)  # wakes nothing by itself: the thread sleeps 1 s after each failure
            time.sleep(3.5)
            looped.block(0.3)
            time.sleep(0.15)
        failures = [entry for entry in logs if entry["event"].startswith("event-loop watchdog failed")]
        assert len(failures) == 1
        assert len(blocked_lines(logs)) == 1
        assert looped.watchdog.running


class TestFork:
    def test_a_forked_child_forgets_the_watchdog_and_starts_its_own(self) -> None:
        """After fork the child has no watchdog thread; starting again in the child watches the child's loop."""
        script = textwrap.dedent(
            """
            import asyncio, os, sys, time
            from opskit.loop import create_component
            from opskit.runtime import Runtime
            from opskit.settings import load_settings

            async def main():
                component = create_component(Runtime(load_settings()))
                component.process_started()
                return component

            async def start_again(component):
                component.process_started()

            loop = asyncio.new_event_loop()
            component = loop.run_until_complete(main())
            assert component.watchdog.running
            pid = os.fork()
            if pid == 0:
                alive = component.watchdog.running
                child_loop = asyncio.new_event_loop()
                child_loop.run_until_complete(start_again(component))
                print("child", alive, component.watchdog.running, flush=True)
                child_loop.run_until_complete(component.shutdown())
                os._exit(0)
            os.waitpid(pid, 0)
            loop.run_until_complete(component.shutdown())
            print("parent", component.watchdog.running, flush=True)
            """
        )
        result = subprocess.run(
            [sys.executable, "-W", "ignore::DeprecationWarning", "-c", script],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.split("\n")[:2] == ["child False True", "parent False"]


@pytest.fixture(autouse=True)
def _default_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()
