"""W3C trace context and baggage read from untrusted request headers.

Every check is strict and silent: a header that is too long, not lowercase hex, has an all-zero
id, or contains anything else (newlines, spaces) is ignored and the request starts a fresh trace.
Nothing from a rejected header is logged, so hostile values can neither crash the request nor
flood or split log lines.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from opentelemetry import baggage
from opentelemetry.context import Context
from opentelemetry.trace import SpanContext, TraceFlags, TraceState

TRACEPARENT_MAX = 128  # version 00 is 55 bytes; later versions may append fields
TRACESTATE_MAX = 1024
TRACESTATE_MEMBERS = 32
BAGGAGE_MAX = 8192
BAGGAGE_MEMBERS = 64

_HEX = b"0123456789abcdef"
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
