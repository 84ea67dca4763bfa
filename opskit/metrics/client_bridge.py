"""Metrics kept by prometheus_client (the app's own, libraries', the rate limiter's) on opskit's endpoint.

One process: everything in prometheus_client's default registry, including its process and
Python collectors. Several workers: prometheus_client's own multiprocess files in the same
``PROMETHEUS_MULTIPROC_DIR``, merged by its ``MultiProcessCollector`` (exact across workers);
when prometheus_client is not in multiprocess mode there, its per-process values are left out
rather than shown as counters that jump between workers. Families opskit itself defines win.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, values
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

__all__ = ["ClientMetrics"]


class _Source:
    """What to read: the default registry, or the multiprocess files."""

    def __init__(self, directory: str | None, client_directory: str | None) -> None:
        self.registry: CollectorRegistry | None = None
        self.files: MultiProcessCollector | None = None
        multiprocess_values = values.ValueClass is not values.MutexValue
        if directory is None and not multiprocess_values:
            self.registry = REGISTRY
        elif directory is not None and multiprocess_values and client_directory == directory:
            self.files = MultiProcessCollector(None, path=directory)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        if self.registry is not None:
            return self.registry.collect()
        if self.files is not None:
            families: Iterable[Metric] = self.files.collect()  # type: ignore[no-untyped-call]
            return families
        return ()


class _Filtered(CollectorRegistry):
    """A registry view without the families opskit exposes itself."""

    def __init__(self, source: _Source) -> None:
        super().__init__(auto_describe=False)
        self._source = source
        self.exclude: frozenset[str] = frozenset()

    def collect(self) -> Iterator[Metric]:
        for family in self._source.collect():
            if family.name not in self.exclude:
                yield family


class ClientMetrics:
    """prometheus_client's families, rendered to append to opskit's exposition."""

    def __init__(self, directory: str | None, client_directory: str | None) -> None:
        self._view = _Filtered(_Source(directory, client_directory))

    def render(self, openmetrics: bool, own_names: Iterable[str]) -> bytes:
        """The families not in ``own_names``, in the format asked for (OpenMetrics ends with
        ``# EOF``); never raises."""
        self._view.exclude = frozenset(n for name in own_names for n in (name, name.removesuffix("_total")))
        try:
            if openmetrics:
                text: bytes = generate_openmetrics(self._view)  # type: ignore[no-untyped-call]
                return text
            return generate_latest(self._view)
        except Exception:  # a broken third-party collector must not take opskit's metrics down
            return b"# EOF\n" if openmetrics else b""
