"""Trace context read from untrusted request headers, and the propagators ``OTEL_PROPAGATORS`` names.

W3C trace context and baggage (the default) are parsed here, on the hot path. Any other propagator
(``b3``, ``b3multi``, or another installed one) goes through the OpenTelemetry propagator API, given
only the headers it reads, each bounded in length and made of visible ASCII.

Every check is strict and silent: a header that is too long, not lowercase hex, has an all-zero
id, or contains anything else (newlines, spaces) is ignored and the request starts a fresh trace.
Nothing from a rejected header is logged, so hostile values can neither crash the request nor
flood or split log lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from importlib.metadata import entry_points
from urllib.parse import unquote

from opentelemetry import baggage, trace
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import SpanContext, TraceFlags, TraceState

from opskit.settings.tracing import PROPAGATOR_GROUP, W3C_PROPAGATORS

__all__ = [
    "ForeignExtractor",
    "build_propagator",
    "extract_baggage",
    "load_propagator",
    "parse_traceparent",
    "parse_tracestate",
]


TRACEPARENT_MAX = 128  # version 00 is 55 bytes; later versions may append fields
TRACESTATE_MAX = 1024
TRACESTATE_MEMBERS = 32
BAGGAGE_MAX = 8192
BAGGAGE_MEMBERS = 64

FOREIGN_HEADER_MAX = 256  # a b3 header is at most 68 bytes; other formats' trace headers are as short
B3_HEADERS = frozenset({"b3", "x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "x-b3-flags"})

_HEX = b"0123456789abcdef"
_VISIBLE_ASCII = bytes(range(0x21, 0x7F))
_EMPTY = Context()
_TRACESTATE_MEMBER = re.compile(
    r"([a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})"
    r"=([\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e])"
)
_BAGGAGE_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}")
_BAGGAGE_VALUE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]{0,4096}")


def parse_traceparent(value: bytes, tracestate: bytes | None = None) -> SpanContext | None:
    """The remote parent named by a ``traceparent`` header, or None when the header is not valid."""
    size = len(value)
    if size < 55 or size > TRACEPARENT_MAX:
        return None
    if value[2:3] != b"-" or value[35:36] != b"-" or value[52:53] != b"-":
        return None
    version = value[:2]
    if size > 55 and (version == b"00" or value[55:56] != b"-"):
        return None
    if (version + value[3:35] + value[36:52] + value[53:55]).translate(None, _HEX) or version == b"ff":
        return None
    trace_id = int(value[3:35], 16)
    span_id = int(value[36:52], 16)
    if not trace_id or not span_id:
        return None
    state = parse_tracestate(tracestate) if tracestate else None
    return SpanContext(
        trace_id,
        span_id,
        is_remote=True,
        trace_flags=TraceFlags(int(value[53:55], 16) & TraceFlags.SAMPLED),
        trace_state=state,
    )


def parse_tracestate(value: bytes) -> TraceState | None:
    """A ``tracestate`` header as a TraceState; None (dropped) when it breaks any W3C rule."""
    if len(value) > TRACESTATE_MAX:
        return None
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for member in text.split(","):
        member = member.strip(" \t")
        if not member:
            continue
        match = _TRACESTATE_MEMBER.fullmatch(member)
        if match is None or match.group(1) in seen or len(pairs) == TRACESTATE_MEMBERS:
            return None
        seen.add(match.group(1))
        pairs.append((match.group(1), match.group(2)))
    return TraceState(pairs) if pairs else None


def extract_baggage(value: bytes, context: Context) -> Context:
    """``context`` with the valid members of a ``baggage`` header; an invalid header adds nothing."""
    if len(value) > BAGGAGE_MAX:
        return context
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return context
    members = text.split(",")
    if len(members) > BAGGAGE_MEMBERS:
        return context
    for member in members:
        pair = member.split(";", 1)[0]
        key, sep, raw = pair.partition("=")
        key, raw = key.strip(" \t"), raw.strip(" \t")
        if sep and _BAGGAGE_KEY.fullmatch(key) and _BAGGAGE_VALUE.fullmatch(raw):
            decoded = unquote(raw)
            if decoded.isprintable():
                context = baggage.set_baggage(key, decoded, context)
    return context


def load_propagator(name: str) -> TextMapPropagator:
    """The installed OpenTelemetry propagator registered as ``name`` (settings checked it exists)."""
    [entry_point] = entry_points(group=PROPAGATOR_GROUP, name=name)
    propagator: TextMapPropagator = entry_point.load()()
    return propagator


def build_propagator(names: Sequence[str]) -> TextMapPropagator:
    """The composite propagator for outgoing calls: the ``OTEL_PROPAGATORS`` list, nothing for ``none``."""
    if "none" in names:
        return CompositePropagator([])
    return CompositePropagator([load_propagator(name) for name in names])


def _visible(value: bytes) -> str | None:
    """``value`` as text when it is short and visible ASCII only (no space, control or non-ASCII byte)."""
    if len(value) > FOREIGN_HEADER_MAX or value.translate(None, _VISIBLE_ASCII):
        return None
    return value.decode("ascii")


class ForeignExtractor:
    """Extracts the remote parent through the non-W3C propagators of ``OTEL_PROPAGATORS``, in order.

    Built only when such a propagator is configured; the W3C fast path never calls it. Each
    propagator sees a carrier of the headers it reads that passed :func:`_visible`; an exception
    from one counts as no context. As in the OpenTelemetry composite propagator, a later
    propagator's valid context wins over an earlier one's.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self._steps: list[str | TextMapPropagator] = []
        fields: set[str] = set()
        for name in names:
            if name in W3C_PROPAGATORS:
                self._steps.append(name)
                continue
            propagator = load_propagator(name)
            self._steps.append(propagator)
            # The b3 propagators each read both the single and the multi-header form.
            fields |= B3_HEADERS if name in ("b3", "b3multi") else {field.lower() for field in propagator.fields}
        self.fields = frozenset(field.encode("latin-1") for field in fields)

    def extract(self, headers: Iterable[tuple[bytes, bytes]], w3c_parent: SpanContext | None) -> SpanContext | None:
        """The remote parent: the last valid one in propagator order (``w3c_parent`` stands for tracecontext)."""
        carrier: dict[str, str] = {}
        fields = self.fields
        for name, value in headers:
            if name in fields:
                text = _visible(value)
                if text is not None:
                    carrier[name.decode("latin-1")] = text
        parent: SpanContext | None = None
        for step in self._steps:
            if isinstance(step, str):
                if step == "tracecontext" and w3c_parent is not None:
                    parent = w3c_parent
                continue
            if not carrier:
                continue
            try:
                context = trace.get_current_span(step.extract(carrier, _EMPTY)).get_span_context()
            except Exception:  # hostile input must never fail the request
                continue
            if context.is_valid:
                parent = context
        return parent
