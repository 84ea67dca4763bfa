"""Extra labels of the request metrics (``OPSKIT_METRICS_LABELS``), each bounded per process.

A label takes its value from a field the request was annotated with (:func:`opskit.annotate`) or
from a request header (``header:X-Client-Version``). Each keeps at most ``limit`` distinct values
in a process; a request bringing a new value past that is counted under ``__other__``, and
``opskit_metrics_label_overflow_total`` says how often, by label.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..exchange import Exchange
from ..fields import REDACTED, FieldPolicy, bound
from ..settings.signals import HEADER_PREFIX, label_name
from .registry import Counter

__all__ = ["MAX_LABEL_VALUE", "OTHER", "ExtraLabel", "extra_labels"]

OTHER = "__other__"
#: Longest label value kept (a hostile header must not make a series name unbounded).
MAX_LABEL_VALUE = 128


class ExtraLabel:
    """One extra label: where its value comes from and the values it has taken so far."""

    __slots__ = ("_header", "_limit", "_overflow", "_redacted", "_seen", "field", "name")

    def __init__(self, source: str, limit: int, overflow: Counter, policy: FieldPolicy) -> None:
        self.name = label_name(source)
        header = source[len(HEADER_PREFIX) :] if source.startswith(HEADER_PREFIX) else None
        self._header = header.lower().encode("latin-1") if header is not None else None
        self.field = None if header is not None else source
        self._redacted = header is not None and policy.sensitive(header)
        self._limit = limit
        self._seen: set[str] = set()
        self._overflow = overflow.labels(self.name)

    def value(self, ex: Exchange) -> str:
        """The label value of ``ex``: its own while fewer than ``limit`` values were seen, else ``__other__``."""
        if self._header is not None:
            raw = ex.header(self._header)
            text = "" if raw is None else REDACTED if self._redacted else raw[:MAX_LABEL_VALUE].decode("latin-1")
        else:
            annotations = ex.annotations
            found = annotations.get(self.field) if annotations else None  # type: ignore[arg-type]
            text = "" if found is None else str(bound(found))[:MAX_LABEL_VALUE]
        seen = self._seen
        if text in seen:
            return text
        if len(seen) < self._limit:
            seen.add(text)
            return text
        self._overflow.inc()
        return OTHER


def extra_labels(sources: Iterable[str], limit: int, overflow: Counter, policy: FieldPolicy) -> tuple[ExtraLabel, ...]:
    """The configured extra labels, in order."""
    return tuple(ExtraLabel(source, limit, overflow, policy) for source in sources)
