"""The storage engine: values, definitions, forked writers, dead-worker compaction."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from opskit.metrics import Registry, prepare_directory, worker_exited
from opskit.metrics.multiprocess import ARCHIVE
from opskit.metrics.registry import Series

TRACE = "0af7651916cd43dd8448eb211c80319c"


def values(registry: Registry, name: str) -> dict[tuple[str, ...], list[float]]:
    """The merged values of every series of metric ``name``."""
    out: dict[tuple[str, ...], list[float]] = {}
    for metric, series in registry.collect():
        if metric.name == name:
            out = {s.labels: s.data.values for s in series}
    return out


def series(registry: Registry, name: str) -> list[Series]:
    for metric, found in registry.collect():
        if metric.name == name:
            return list(found)
    return []


@pytest.fixture
def directory(tmp_path: Path) -> str:
    path = str(tmp_path / "multiproc")
    prepare_directory(path)
    return path


@pytest.fixture
def registry(directory: str) -> Iterator[Registry]:
    r = Registry(directory)
    yield r
    r.close()


def in_child(work: Callable[[], None]) -> int:
    """Run ``work`` in a forked process that then exits; return its pid once it is reaped."""
    pid = os.fork()
    if pid == 0:
        try:
            work()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return pid


def store_files(directory: str) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.endswith(".mmap"))


class TestSingleProcess:
    def test_counter_gauge_histogram_values(self) -> None:
        """In memory: counters add, gauges set, histograms fill the bucket of each value."""
        r = Registry(None)
        c = r.counter("jobs_total", "Jobs.", ["kind"])
        g = r.gauge("queue_depth", "Depth.")
        h = r.histogram("job_duration_seconds", "Durations.", buckets=(0.1, 1.0))
        c.labels("a").inc()
        c.labels("a").inc(2.5)
        c.labels("b").inc()
        g.set(7)
        g.labels().dec(2)
        for v in (0.05, 0.1, 0.5, 3.0):
            h.observe(v)
        assert values(r, "jobs_total") == {("a",): [3.5], ("b",): [1.0]}
        assert values(r, "queue_depth") == {(): [5.0]}
        # buckets are stored per bucket (le=0.1, le=1, +Inf), then the sum
        assert values(r, "job_duration_seconds") == {(): [2.0, 1.0, 1.0, 3.65]}
        r.close()

    def test_store_grows_without_losing_values(self) -> None:
        """Thousands of series outgrow the first map; earlier values survive the remap."""
        r = Registry(None)
        c = r.counter("many_total", "Many.", ["i"])
        for i in range(3000):
            c.labels(str(i)).inc(i)
        got = values(r, "many_total")
        assert len(got) == 3000
        assert got[("2999",)] == [2999.0] and got[("0",)] == [0.0]
        r.close()

    def test_threads_lose_no_update(self) -> None:
        """Updates from several threads at once are all counted."""
        r = Registry(None)
        c = r.counter("threaded_total", "Threaded.").labels()
        h = r.histogram("threaded_seconds", "Threaded.").labels()

        def work() -> None:
            for _ in range(20_000):
                c.inc()
                h.observe(0.2)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert values(r, "threaded_total") == {(): [80_000.0]}
        assert sum(values(r, "threaded_seconds")[()][:-1]) == 80_000
        r.close()

    def test_exemplar_is_the_latest_per_bucket(self) -> None:
        """A trace ID passed with an update becomes the exemplar of that series or bucket."""
        r = Registry(None)
        c = r.counter("traced_total", "Traced.")
        h = r.histogram("traced_seconds", "Traced.", buckets=(0.1, 1.0))
        c.inc(trace_id="1" * 32)
        c.inc(trace_id=TRACE)
        h.observe(0.5, trace_id=TRACE)
        (counter,) = series(r, "traced_total")
        assert counter.data.exemplars[0] is not None and counter.data.exemplars[0][:2] == (TRACE, 1.0)
        (hist,) = series(r, "traced_seconds")
        assert [e is not None for e in hist.data.exemplars] == [False, True, False]
        r.close()


class TestDefinitions:
    def test_same_definition_returns_the_same_metric(self) -> None:
        """Defining a metric twice (two instrument() calls) gives the one metric."""
        r = Registry(None)
        assert r.counter("a_total", "A.", ["x"]) is r.counter("a_total", "A.", ["x"])

    def test_conflicting_definition_fails(self) -> None:
        """A name reused with other labels or another type is refused."""
        r = Registry(None)
        r.counter("a_total", "A.", ["x"])
        with pytest.raises(ValueError, match="already defined"):
            r.counter("a_total", "A.", ["y"])
        r.histogram("b_seconds", "B.", buckets=(1.0,))
        with pytest.raises(ValueError, match="already defined"):
            r.histogram("b_seconds", "B.", buckets=(2.0,))

    @pytest.mark.parametrize(
        ("kind", "name", "labels"),
        [
            ("counter", "requests", ()),
            ("counter", "bad-name_total", ()),
            ("gauge", "g_total", ()),
            ("histogram", "h_seconds", ("le",)),
            ("gauge", "g", ("__reserved",)),
        ],
    )
    def test_names_promtool_would_reject_are_refused(self, kind: str, name: str, labels: tuple[str, ...]) -> None:
        """Counters end in _total, others do not; names and labels follow the Prometheus rules."""
        r = Registry(None)
        with pytest.raises(ValueError):
            getattr(r, kind)(name, "Doc.", labels)

    def test_wrong_label_count_fails(self) -> None:
        """labels() takes exactly one string per label name."""
        c = Registry(None).counter("x_total", "X.", ["a", "b"])
        with pytest.raises(ValueError):
            c.labels("only-one")


class TestWorkers:
    def test_forked_workers_add_up(self, registry: Registry, directory: str) -> None:
        """Values written by forked workers into one directory are summed at scrape."""
        c = registry.counter("work_total", "Work.", ["kind"])
        c.labels("a").inc(1)  # the parent's own file
        for n in (10, 20):
            in_child(lambda n=n: c.labels("a").inc(n))  # type: ignore[misc]
        assert values(registry, "work_total") == {("a",): [31.0]}

    def test_a_forked_child_does_not_inherit_values(self, registry: Registry, directory: str) -> None:
        """A child forked after the parent counted starts from zero, in a file of its own."""
        c = registry.counter("fork_total", "Fork.")
        c.inc(5)
        seen: list[float] = []

        def child() -> None:
            c.inc(1)
            own = [n for n in store_files(directory) if n.startswith(f"opskit-{os.getpid()}-")]
            assert len(own) == 1

        in_child(child)
        seen.append(values(registry, "fork_total")[()][0])
        assert seen == [6.0]

    def test_exited_worker_is_folded_into_the_archive(self, registry: Registry, directory: str) -> None:
        """worker_exited keeps every count and exemplar, and deletes the worker's file."""
        c = registry.counter("done_total", "Done.", ["kind"])
        h = registry.histogram("done_seconds", "Done.", buckets=(1.0,))
        c.labels("a").inc()

        def child() -> None:
            c.labels("a").inc(4, trace_id=TRACE)
            h.observe(0.5)

        pid = in_child(child)
        before = values(registry, "done_total")
        worker_exited(pid, directory)
        names = store_files(directory)
        assert not [n for n in names if n.startswith(f"opskit-{pid}-")]
        assert ARCHIVE in names
        assert values(registry, "done_total") == before == {("a",): [5.0]}
        assert values(registry, "done_seconds") == {(): [1.0, 0.0, 0.5]}
        (s,) = series(registry, "done_total")
        assert s.data.exemplars[0] is not None and s.data.exemplars[0][0] == TRACE

    def test_files_stay_bounded_over_many_restarts(self, registry: Registry, directory: str) -> None:
        """After 30 worker lifetimes the directory holds the live file and the archive only."""
        c = registry.counter("restarts_total", "Restarts.")
        c.inc()
        for _ in range(30):
            worker_exited(in_child(lambda: c.inc(2)), directory)
        assert len(store_files(directory)) == 2
        assert values(registry, "restarts_total") == {(): [61.0]}

    def test_scrape_folds_workers_that_died_without_a_hook(self, registry: Registry, directory: str) -> None:
        """Without child_exit (uvicorn --workers) the scrape itself folds dead workers' files."""
        c = registry.counter("unhooked_total", "Unhooked.")
        for _ in range(5):
            in_child(lambda: c.inc(3))
        assert values(registry, "unhooked_total") == {(): [15.0]}
        assert store_files(directory) == [ARCHIVE]  # this process never wrote: no file of its own
        assert values(registry, "unhooked_total") == {(): [15.0]}

    def test_gauges_of_dead_workers_stop_counting(self, registry: Registry, directory: str) -> None:
        """A worker killed mid-request leaves no phantom in-progress count behind."""
        g = registry.gauge("busy", "Busy.", mode="sum")
        g.set(1)
        in_child(lambda: g.set(40))
        assert values(registry, "busy") == {(): [1.0]}

    def test_gauge_modes_max_and_min(self, registry: Registry, directory: str) -> None:
        """max and min gauges combine live workers' values."""
        hi = registry.gauge("hi", "Hi.", mode="max")
        lo = registry.gauge("lo", "Lo.", mode="min")
        hi.set(3)
        lo.set(3)
        ready_r, ready_w = os.pipe()
        done_r, done_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # a live worker: stays until the parent has scraped
            hi.set(9)
            lo.set(1)
            os.write(ready_w, b"x")
            os.read(done_r, 1)
            os._exit(0)
        try:
            assert os.read(ready_r, 1) == b"x"
            assert values(registry, "hi") == {(): [9.0]}
            assert values(registry, "lo") == {(): [1.0]}
        finally:
            os.write(done_w, b"x")
            os.waitpid(pid, 0)
            for fd in (ready_r, ready_w, done_r, done_w):
                os.close(fd)

    def test_prepare_directory_wipes_it(self, tmp_path: Path) -> None:
        """Master start: the directory exists and old files are gone."""
        path = tmp_path / "d"
        path.mkdir()
        (path / "opskit-1-aa.mmap").write_bytes(b"old")
        (path / "sub").mkdir()
        prepare_directory(str(path))
        assert list(path.iterdir()) == []
        prepare_directory(str(tmp_path / "new"))
        assert (tmp_path / "new").is_dir()


class TestInterruptedCompaction:
    def test_a_file_left_after_its_absorption_is_not_counted_twice(self, registry: Registry, directory: str) -> None:
        """If compaction died between writing the archive and deleting the file, the file is
        skipped by scrapes (counted once) and deleted by the next sweep."""
        c = registry.counter("crash_total", "Crash.")
        c.inc()
        pid = in_child(lambda: c.inc(7))
        (name,) = [n for n in store_files(directory) if n.startswith(f"opskit-{pid}-")]
        kept = Path(directory, name).read_bytes()
        worker_exited(pid, directory)
        Path(directory, name).write_bytes(kept)  # as if the unlink had not happened
        assert values(registry, "crash_total") == {(): [8.0]}
        assert name not in store_files(directory)
        assert values(registry, "crash_total") == {(): [8.0]}

    def test_compaction_during_a_scrape_counts_each_request_once(
        self, registry: Registry, directory: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A worker folded into the archive between the scrape reading its file and reading the
        archive is still counted once (the archive names what it absorbed)."""
        from opskit.metrics import multiprocess

        c = registry.counter("race_total", "Race.")
        c.inc()
        pid = in_child(lambda: c.inc(5))
        real_read = multiprocess._read

        def read(path: str) -> bytes | None:
            if path.endswith(ARCHIVE):
                monkeypatch.setattr(multiprocess, "_read", real_read)
                worker_exited(pid, directory)  # the master's child_exit hook, right now
            return real_read(path)

        monkeypatch.setattr(multiprocess, "_read", read)
        assert multiprocess.read_directory(directory, sweep=False)[b'["race_total",[]]'].values == [6.0]
