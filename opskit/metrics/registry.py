"""Metric definitions (counter, gauge, histogram) over the process's :class:`~._store.Store`.

A metric is defined once per process (defining it again with the same shape returns the same
object); each label-value combination becomes a *child* that owns fixed slots in the store on
first use, so an update is a lock and one or two float64 adds.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import re
import tempfile
import threading
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from time import time
from typing import Final, Generic, Literal, TypeVar

import orjson

from .layout import EXEMPLAR_DOUBLES, MERGE_MODES, SUM
from .multiprocess import Merged, merge_buffers, read_directory
from .store import Store, process_start_time

__all__ = [
    "DEFAULT_BUCKETS",
    "AnyMetric",
    "Counter",
    "CounterChild",
    "Gauge",
    "GaugeChild",
    "GaugeMode",
    "Histogram",
    "HistogramChild",
    "Kind",
    "Metric",
    "Registry",
    "default_directory",
]

Kind = Literal["counter", "gauge", "histogram"]
GaugeMode = Literal["sum", "max", "min"]
DEFAULT_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_RESERVED_SUFFIXES = ("_total", "_count", "_sum", "_bucket", "_created")


def default_directory(configured: str | None) -> str | None:
    """Where the stores of this process's workers meet, or ``None`` for single-process mode.

    ``configured`` (``PROMETHEUS_MULTIPROC_DIR``) wins. Otherwise, in a worker that
    ``multiprocessing`` started (``uvicorn --workers N``), a directory private to the parent
    server process, so sibling workers still add up instead of each answering alone.
    """
    if configured:
        return configured
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return None
    stamp = process_start_time(parent.pid)
    return os.path.join(tempfile.gettempdir(), f"opskit-metrics-{parent.pid}-{stamp}")


class CounterChild:
    """One labelled series of a counter."""

    __slots__ = ("_store", "index")

    def __init__(self, store: Store, index: int) -> None:
        self._store = store
        self.index = index

    def inc(self, amount: float = 1.0, trace_id: str | None = None) -> None:
        """Add ``amount`` (>= 0); ``trace_id`` records an exemplar."""
        if amount < 0:
            raise ValueError("counters only go up")
        store = self._store
        lock = store.lock
        lock.acquire()  # not ``with``: its special-method lookups cost more than the add
        try:
            store.v[self.index] += amount
            if trace_id:
                store.exemplar(self.index + 1, trace_id, amount, time())
        finally:
            lock.release()

    def exemplar_locked(self, trace_id: str, value: float, now: float) -> None:
        """Record an exemplar, the store's lock held by the caller."""
        self._store.exemplar(self.index + 1, trace_id, value, now)


class GaugeChild:
    """One labelled series of a gauge."""

    __slots__ = ("_store", "index")

    def __init__(self, store: Store, index: int) -> None:
        self._store = store
        self.index = index

    def set(self, value: float) -> None:
        store = self._store
        lock = store.lock
        lock.acquire()
        try:
            store.v[self.index] = value
        finally:
            lock.release()

    def inc(self, amount: float = 1.0) -> None:
        store = self._store
        lock = store.lock
        lock.acquire()
        try:
            store.v[self.index] += amount
        finally:
            lock.release()

    def dec(self, amount: float = 1.0) -> None:
        self.inc(-amount)


class HistogramChild:
    """One labelled series of a histogram: bucket counts, then the sum, then bucket exemplars."""

    __slots__ = ("_bounds", "_store", "index", "sum_index")

    def __init__(self, store: Store, index: int, bounds: tuple[float, ...]) -> None:
        self._store = store
        self._bounds = bounds
        self.index = index
        self.sum_index = index + len(bounds) + 1

    def observe(self, value: float, trace_id: str | None = None) -> None:
        """Count ``value`` in its bucket; ``trace_id`` records it as that bucket's exemplar."""
        store = self._store
        lock = store.lock
        lock.acquire()
        try:
            bucket = self.observe_locked(store.v, value)
            if trace_id:
                self.exemplar_locked(bucket, trace_id, value, time())
        finally:
            lock.release()

    def observe_locked(self, v: memoryview[float], value: float) -> int:
        """Count ``value`` in ``v`` (the store's values), the store's lock held by the caller; its bucket."""
        bucket = bisect_left(self._bounds, value)
        v[self.index + bucket] += 1.0
        v[self.sum_index] += value
        return bucket

    def exemplar_locked(self, bucket: int, trace_id: str, value: float, now: float) -> None:
        """Record ``value`` as the exemplar of ``bucket``, the store's lock held by the caller."""
        self._store.exemplar(self.sum_index + 1 + EXEMPLAR_DOUBLES * bucket, trace_id, value, now)


Child = TypeVar("Child", CounterChild, GaugeChild, HistogramChild)


class Metric(Generic[Child]):
    """A metric definition and its children by label values."""

    kind: Kind

    def __init__(self, registry: Registry, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        if not _NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        for label in labelnames:
            if not _LABEL.match(label) or label.startswith("__"):
                raise ValueError(f"invalid label name {label!r} in {name}")
        if len(set(labelnames)) != len(labelnames):
            raise ValueError(f"duplicate label names in {name}")
        self.registry = registry
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        #: What the OTLP export calls it: name, UCUM unit (``None``: from the name's suffix), attribute keys.
        self.otlp_name = name
        self.unit: str | None = None
        self.attribute_keys = self.labelnames
        self._children: dict[tuple[str, ...], Child] = {}
        self._lock = threading.Lock()

    def describe_otlp(self, name: str, unit: str, attribute_keys: Sequence[str]) -> None:
        """Give the metric its OTLP name, unit and attribute keys (one per label, in order)."""
        if len(attribute_keys) != len(self.labelnames):
            raise ValueError(f"{self.name}: {len(self.labelnames)} labels, {len(attribute_keys)} attribute keys")
        self.otlp_name = name
        self.unit = unit
        self.attribute_keys = tuple(attribute_keys)

    def labels(self, *values: str) -> Child:
        """The child for these label values (in :attr:`labelnames` order), created on first use."""
        child = self._children.get(values)
        if child is None:
            child = self._create(values)
        return child

    def _create(self, values: tuple[str, ...]) -> Child:
        if len(values) != len(self.labelnames) or not all(isinstance(v, str) for v in values):
            raise ValueError(f"{self.name} takes {len(self.labelnames)} string label values {self.labelnames}")
        with self._lock:
            child = self._children.get(values)
            if child is None:
                store = self.registry.store
                key = orjson.dumps([self.name, list(values)])
                with store.lock:
                    index = store.allocate(key, *self._shape())
                child = self._child(store, index)
                self._children[values] = child
        return child

    def _shape(self) -> tuple[int, int, int]:
        raise NotImplementedError

    def _child(self, store: Store, index: int) -> Child:
        raise NotImplementedError

    def same_as(self, other: Metric[Child]) -> bool:
        return type(self) is type(other) and self.labelnames == other.labelnames and self._shape() == other._shape()


class Counter(Metric[CounterChild]):
    """A value that only goes up; the name ends in ``_total``. Children carry an exemplar."""

    kind = "counter"

    def __init__(self, registry: Registry, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        if not name.endswith("_total"):
            raise ValueError(f"counter names end in _total: {name!r}")
        super().__init__(registry, name, documentation, labelnames)

    def _shape(self) -> tuple[int, int, int]:
        return 1, 1, SUM

    def _child(self, store: Store, index: int) -> CounterChild:
        return CounterChild(store, index)

    def inc(self, amount: float = 1.0, trace_id: str | None = None) -> None:
        """Increment the series of a counter without labels."""
        self.labels().inc(amount, trace_id)


class Gauge(Metric[GaugeChild]):
    """A value that goes up and down. Across workers it is summed (``sum``), or ``max``/``min``;
    the value of a worker that exited no longer counts."""

    kind = "gauge"

    def __init__(
        self, registry: Registry, name: str, documentation: str, labelnames: Sequence[str], mode: GaugeMode
    ) -> None:
        if name.endswith(_RESERVED_SUFFIXES):
            raise ValueError(f"gauge names must not end in {_RESERVED_SUFFIXES}: {name!r}")
        if mode not in MERGE_MODES:
            raise ValueError(f"gauge mode is one of {sorted(MERGE_MODES)}, not {mode!r}")
        self.mode = mode
        super().__init__(registry, name, documentation, labelnames)

    def _shape(self) -> tuple[int, int, int]:
        return 1, 0, MERGE_MODES[self.mode]

    def _child(self, store: Store, index: int) -> GaugeChild:
        return GaugeChild(store, index)

    def set(self, value: float) -> None:
        """Set the series of a gauge without labels."""
        self.labels().set(value)


class Histogram(Metric[HistogramChild]):
    """Counts of observations per bucket (``le``), their sum and count. Buckets carry exemplars."""

    kind = "histogram"

    def __init__(
        self,
        registry: Registry,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
    ) -> None:
        if name.endswith(_RESERVED_SUFFIXES):
            raise ValueError(f"histogram names must not end in {_RESERVED_SUFFIXES}: {name!r}")
        if "le" in labelnames:
            raise ValueError("'le' is reserved for histogram buckets")
        bounds = tuple(sorted(float(b) for b in buckets if not math.isinf(b)))
        if not bounds or len(set(bounds)) != len(bounds) or any(math.isnan(b) for b in bounds):
            raise ValueError(f"{name}: buckets must be distinct finite numbers")
        self.bounds = bounds
        super().__init__(registry, name, documentation, labelnames)

    def _shape(self) -> tuple[int, int, int]:
        n = len(self.bounds) + 1
        return n + 1, n, SUM

    def _child(self, store: Store, index: int) -> HistogramChild:
        return HistogramChild(store, index, self.bounds)

    def same_as(self, other: Metric[HistogramChild]) -> bool:
        return super().same_as(other) and isinstance(other, Histogram) and other.bounds == self.bounds

    def observe(self, value: float, trace_id: str | None = None) -> None:
        """Observe into the series of a histogram without labels."""
        self.labels().observe(value, trace_id)


AnyMetric = Counter | Gauge | Histogram
M = TypeVar("M", Counter, Gauge, Histogram)


@dataclass(slots=True)
class Series:
    """A merged series ready for exposition."""

    labels: tuple[str, ...]
    data: Merged


class Registry:
    """The metrics of a process and the store under them.

    ``directory`` is where the stores of all workers meet (``PROMETHEUS_MULTIPROC_DIR``); ``None``
    keeps values in memory. Without an argument it is read from the settings on first use.
    """

    _UNSET: Final = "\0unset"

    def __init__(self, directory: str | None = _UNSET) -> None:
        self._directory = directory
        self._store: Store | None = None
        self._metrics: dict[str, AnyMetric] = {}
        self._lock = threading.Lock()

    @property
    def directory(self) -> str | None:
        if self._directory == self._UNSET:
            from ..runtime import current

            self._directory = default_directory(current().settings.prometheus_multiproc_dir)
        return self._directory

    def configure(self, directory: str | None) -> None:
        """Set the directory before any value is stored (:func:`create_component` does)."""
        with self._lock:
            if self._store is not None:
                if self._store.directory != directory:
                    raise RuntimeError(
                        f"metrics already stored in {self._store.directory!r}; configure {directory!r} first"
                    )
                return
            self._directory = directory

    @property
    def store(self) -> Store:
        store = self._store
        if store is None:
            with self._lock:
                if self._store is None:
                    self._store = Store(self.directory)
                store = self._store
        return store

    def close(self) -> None:
        """Release the store (tests; a process's registry lives as long as the process)."""
        if self._store is not None:
            self._store.close()

    def _define(self, metric: M) -> M:
        with self._lock:
            have = self._metrics.get(metric.name)
            if have is None:
                self._metrics[metric.name] = metric
                return metric
        if isinstance(have, type(metric)) and have.same_as(metric):
            return have
        raise ValueError(f"metric {metric.name} is already defined with another type, labels or buckets")

    def counter(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Counter:
        """Define (or get) a counter; ``name`` ends in ``_total``."""
        return self._define(Counter(self, name, documentation, labelnames))

    def gauge(self, name: str, documentation: str, labelnames: Sequence[str] = (), *, mode: GaugeMode = "sum") -> Gauge:
        """Define (or get) a gauge; ``mode`` says how the values of several workers combine."""
        return self._define(Gauge(self, name, documentation, labelnames, mode))

    def histogram(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> Histogram:
        """Define (or get) a histogram with upper bounds ``buckets`` (``+Inf`` is added)."""
        return self._define(Histogram(self, name, documentation, labelnames, buckets))

    def metrics(self) -> list[AnyMetric]:
        """Every defined metric, by name."""
        return [self._metrics[name] for name in sorted(self._metrics)]

    def collect(self) -> list[tuple[AnyMetric, list[Series]]]:
        """Every metric with its series merged over all workers, sorted by name and labels.

        Reads files when there is a directory: call it off the event loop.
        """
        directory = self.directory
        if directory is not None:
            merged = read_directory(directory)
        else:
            merged = merge_buffers([self.store.snapshot()]) if self._store is not None else {}
        by_name: dict[str, list[Series]] = {}
        for key, data in merged.items():
            name, values = orjson.loads(key)
            by_name.setdefault(name, []).append(Series(tuple(values), data))
        out: list[tuple[AnyMetric, list[Series]]] = []
        for metric in self.metrics():
            series = by_name.get(metric.name, [])
            n_values, n_exemplars, mode = metric._shape()
            series = [s for s in series if len(s.labels) == len(metric.labelnames) and len(s.data.values) == n_values]
            if not series and not metric.labelnames and metric.kind != "gauge":
                series = [Series((), Merged(mode, [0.0] * n_values, [None] * n_exemplars))]
            series.sort(key=lambda s: s.labels)
            out.append((metric, series))
        return out
