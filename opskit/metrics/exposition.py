"""The Prometheus text format and OpenMetrics (with exemplars), chosen by the scraper's ``Accept``."""

from __future__ import annotations

import gzip
import math
from collections.abc import Sequence
from typing import Final

from .registry import AnyMetric, Histogram, Series

__all__ = ["OPENMETRICS", "TEXT", "accepts_gzip", "render", "wants_openmetrics"]

TEXT: Final = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS: Final = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def wants_openmetrics(accept: str) -> bool:
    """Whether an ``Accept`` header asks for OpenMetrics (Prometheus does when it scrapes)."""
    for part in accept.split(","):
        media, *params = part.split(";")
        if media.strip().lower() != "application/openmetrics-text":
            continue
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    if float(value) <= 0:
                        break
                except ValueError:
                    break
        else:
            return True
    return False


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` header allows gzip."""
    for part in accept_encoding.split(","):
        coding, _, q = part.partition(";")
        if coding.strip().lower() == "gzip":
            return q.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def number(value: float) -> str:
    """A float the way Prometheus writes it (``+Inf``, ``NaN``, ``1.0``)."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_label_value(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _help(text: str, openmetrics: bool) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if openmetrics else text


def _exemplar(ex: tuple[str, float, float] | None, openmetrics: bool) -> str:
    if ex is None or not openmetrics:
        return ""
    return f' # {{trace_id="{ex[0]}"}} {number(ex[1])} {ex[2]:.3f}'


def _histogram(out: list[str], metric: Histogram, s: Series, om: bool) -> None:
    names = metric.labelnames
    n = len(metric.bounds) + 1
    values = s.data.values
    exemplars = s.data.exemplars
    cumulative = 0.0
    for i, bound in enumerate((*metric.bounds, math.inf)):
        cumulative += values[i]
        labels = _labels(names, s.labels, f'le="{number(bound)}"')
        ex = exemplars[i] if i < len(exemplars) else None
        out.append(f"{metric.name}_bucket{labels} {number(cumulative)}{_exemplar(ex, om)}\n")
    labels = _labels(names, s.labels)
    out.append(f"{metric.name}_count{labels} {number(cumulative)}\n")
    out.append(f"{metric.name}_sum{labels} {number(values[n])}\n")


def render(collected: Sequence[tuple[AnyMetric, Sequence[Series]]], openmetrics: bool) -> bytes:
    """The exposition of ``collected`` (from :meth:`Registry.collect`)."""
    out: list[str] = []
    for metric, series in collected:
        family = metric.name
        if openmetrics and metric.kind == "counter":
            family = metric.name[: -len("_total")]
        out.append(f"# HELP {family} {_help(metric.documentation, openmetrics)}\n")
        out.append(f"# TYPE {family} {metric.kind}\n")
        for s in series:
            if isinstance(metric, Histogram):
                _histogram(out, metric, s, openmetrics)
                continue
            labels = _labels(metric.labelnames, s.labels)
            ex = s.data.exemplars[0] if s.data.exemplars else None
            out.append(f"{metric.name}{labels} {number(s.data.values[0])}{_exemplar(ex, openmetrics)}\n")
    if openmetrics:
        out.append("# EOF\n")
    return "".join(out).encode("utf-8")


def encode_body(body: bytes, gzipped: bool) -> bytes:
    """``body``, gzip-compressed when asked."""
    return gzip.compress(body, compresslevel=5, mtime=0) if gzipped else body
