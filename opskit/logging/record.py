"""One written log line as an OTLP ``LogRecord``, in protobuf wire format.

``level`` gives the severity, ``event`` the body, ``trace_id`` and ``span_id`` the record's trace
context, every other key an attribute. Two encoders write the same records:

- the compiled one (:func:`opskit.otlp.native.log_record`, built when a C compiler is at hand)
  takes the line's structured form: the access log hands its line over before rendering it, so the
  record costs no JSON parse and about what writing the line to stdout costs;
- the Python one (:func:`encode_record`) takes the rendered JSON line, and does all the work when the
  native module is absent or a line holds values it leaves to Python (nested objects, integers past
  int64, str subclasses).

:data:`opskit.otlp.native.NATIVE` says which one runs. Both are measured by ``bench/logs_micro.py``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from itertools import compress, repeat
from operator import is_
from typing import Any

import orjson

from ..otlp.native import log_record
from ..otlp.wire import any_value, field, fixed64, varint

__all__ = ["SEVERITY", "encode_line", "encode_native", "encode_record"]

#: The compiled encoder, ``None`` when the install has none (a module attribute, so a benchmark can switch it off).
encode_native: Callable[[int, dict[str, Any]], bytes | None] | None = log_record

# SeverityNumber of each level name opskit writes (structlog's and the stdlib's).
SEVERITY = {
    "trace": 1,
    "debug": 5,
    "info": 9,
    "notice": 10,
    "warn": 13,
    "warning": 13,
    "error": 17,
    "exception": 17,
    "critical": 21,
    "fatal": 21,
}
# Keys that are fields of the record, never attributes (the line's own timestamp: the tap's clock read is used).
_FIELDS = frozenset({"timestamp", "level", "event", "trace_id", "span_id"})
_SKIPPED = frozenset({"timestamp", "trace_id", "span_id"})  # read from the parsed line, or not at all
# Values unique to (almost) every line: caching their encodings would only churn the cache.
UNCACHED_KEYS = frozenset({"request_id", "path", "duration_ms", "response_bytes", "exception"})
CACHE_MAX = 4096
_CACHED_TEXT = 256  # longer strings are encoded each time

_double = struct.Struct("<d").pack
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError
_INT64 = 1 << 63
_keys: dict[str, bytes] = {}
# (key, string value) -> the pair's encoding. Only string values are held, so a hit is exact:
# ("n", 1), ("n", 1.0) and ("n", True) are equal tuples, but none of them equals ("n", "1").
_strings: dict[tuple[str, str], bytes] = {}
_pairs: dict[tuple[str, type, Any], bytes] = {}  # ints and bools, the type in the key
_levels: dict[str, bytes] = {}
_strings_get = _strings.get


def _hex_id(value: Any, length: int) -> bytes | None:
    if type(value) is not str or len(value) != length:
        return None
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return None
    # fromhex skips spaces: a shorter result was not ``length`` hex digits. All zeros is no ID.
    return raw if len(raw) * 2 == length and any(raw) else None


def _remember(cache: dict[Any, bytes], key: Any, encoded: bytes) -> bytes:
    if len(cache) >= CACHE_MAX:
        cache.clear()  # bounded: cleared whole when full
    cache[key] = encoded
    return encoded


def _attribute_uncached(key: str, value: Any) -> bytes:
    """``LogRecord.attributes`` (field 6) holding one KeyValue, in one piece when every length fits a byte."""
    encoded_key = _keys.get(key)
    if encoded_key is None:
        encoded_key = _remember(_keys, key, field(1, key.encode("utf-8", "replace")))
    kind = type(value)
    if kind is str:
        raw: bytes = value.encode("utf-8", "replace")
        size = len(raw)
        total = len(encoded_key) + size + 4
        if total < 0x80:
            return bytes((0x32, total)) + encoded_key + bytes((0x12, size + 2, 0x0A, size)) + raw
    elif kind is float and len(encoded_key) < 0x70:
        return bytes((0x32, len(encoded_key) + 11)) + encoded_key + b"\x12\x09\x21" + _double(value)
    elif kind is int and 0 <= value < _INT64 and len(encoded_key) < 0x70:
        number = varint(value)
        size = len(number)
        return bytes((0x32, len(encoded_key) + 3 + size)) + encoded_key + bytes((0x12, size + 1, 0x18)) + number
    return field(6, encoded_key + field(2, any_value(value)))


def _level(level: str) -> bytes:
    found = _levels.get(level)
    if found is None:
        severity = SEVERITY.get(level.lower(), 0)
        encoded = (b"\x10" + varint(severity) if severity else b"") + field(3, level.upper().encode("utf-8", "replace"))
        found = _remember(_levels, level, encoded)
    return found


def _missed(key: str, value: Any, out: list[bytes]) -> None:
    """Append the encoding of a pair the string cache did not hold (and remember it when it repeats)."""
    kind = type(value)
    if key in _FIELDS:
        if key == "level":
            if kind is str:
                encoded = _level(value)
                out.append(_remember(_strings, (key, value), encoded) if len(value) < _CACHED_TEXT else encoded)
        elif key == "event" and value is not None:
            if kind is str and len(value) < _CACHED_TEXT:
                out.append(_remember(_strings, (key, value), field(5, any_value(value))))
            else:
                out.append(field(5, any_value(value)))
        return
    if kind is int or kind is bool:
        found = _pairs.get((key, kind, value))
        if found is None:
            found = _remember(_pairs, (key, kind, value), _attribute_uncached(key, value))
        out.append(found)
    elif key in UNCACHED_KEYS:
        out.append(_attribute_uncached(key, value))
    elif kind is str:
        encoded = _attribute_uncached(key, value)
        out.append(_remember(_strings, (key, value), encoded) if len(value) < _CACHED_TEXT else encoded)
    else:
        out.append(_attribute_uncached(key, value))


def encode_record(time_ns: int, line: bytes) -> bytes:
    """The fields of one ``LogRecord`` for a written line (a JSON object, or any other text).

    Encodings of repeated string pairs (level, logger, event, method, route...) are cached,
    bounded, and looked up for the whole line at once (``map`` over the parsed pairs, no Python
    step per pair); only the pairs it misses (IDs, paths, numbers, new values) are encoded one by one.
    The cost per line is measured by ``bench/logs_micro.py``.
    """
    try:
        parsed = _loads(line)
    except _JSONDecodeError:
        parsed = None
    stamp = fixed64(time_ns)
    out = [b"\x09", stamp, b"\x59", stamp]  # time_unix_nano, observed_time_unix_nano
    if type(parsed) is not dict:
        out.append(field(5, field(1, line.rstrip(b"\r\n"))))  # body: the line as text
        return b"".join(out)
    items = list(parsed.items())
    try:
        found = list(map(_strings_get, items))
    except TypeError:  # a list or an object among the values: nothing to look up whole
        found = [None] * len(items)
    out.extend(filter(None, found))
    if None in found:
        append = out.append
        keys_get = _keys.get
        pairs_get = _pairs.get
        # Inline, the common misses: unique strings (path, request ID), numbers, the skipped record fields.
        for key, value in compress(items, map(is_, found, repeat(None))):
            kind = type(value)
            if kind is str:
                if key in _SKIPPED:
                    continue
                head = keys_get(key)
                if head is not None and key in UNCACHED_KEYS:
                    raw = value.encode("utf-8", "replace")
                    size = len(raw)
                    total = len(head) + size + 4
                    if total < 0x80:
                        append(bytes((0x32, total)) + head + bytes((0x12, size + 2, 0x0A, size)) + raw)
                        continue
            elif kind is float:
                head = keys_get(key)
                if head is not None and len(head) < 0x70:
                    append(bytes((0x32, len(head) + 11)) + head + b"\x12\x09\x21" + _double(value))
                    continue
            elif kind is int:
                # The type is part of the cache key: True == 1, but they encode differently.
                encoded = pairs_get((key, int, value))
                if encoded is not None:
                    append(encoded)
                    continue
            _missed(key, value, out)
        trace_id = _hex_id(parsed.get("trace_id"), 32)
        if trace_id is not None:
            out.append(b"\x4a\x10" + trace_id)
            span_id = _hex_id(parsed.get("span_id"), 16)
            if span_id is not None:
                out.append(b"\x52\x08" + span_id)
    return b"".join(out)


def encode_line(time_ns: int, line: bytes) -> bytes:
    """A written line as a ``ScopeLogs.log_records`` field: parsed, then encoded by the native
    encoder when it takes the line, by :func:`encode_record` otherwise."""
    if encode_native is not None:
        try:
            parsed = _loads(line)
        except _JSONDecodeError:
            parsed = None
        if type(parsed) is dict:
            encoded = encode_native(time_ns, parsed)
            if encoded is not None:
                return encoded
    return field(2, encode_record(time_ns, line))
