"""The few protobuf wire-format pieces OTLP messages are written with directly.

A hand-written encoder for a message of known, flat shape costs a fraction of building the
generated message objects: what the log exporter does for every line. See the protobuf encoding
reference (varints, tags ``field << 3 | wire type``, length-delimited fields).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

__all__ = ["any_value", "field", "fixed32", "fixed64", "key_value", "key_values", "varint"]

fixed64 = struct.Struct("<Q").pack
fixed32 = struct.Struct("<I").pack
_double = struct.Struct("<d").pack
_INT64 = 1 << 63
_MAX_DEPTH = 8


def varint(value: int) -> bytes:
    """``value`` as a base-128 varint (a negative int64 in two's complement, ten bytes)."""
    if value < 0:
        value += 1 << 64
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): strings, bytes, embedded messages."""
    size = len(payload)
    if size < 0x80 and number < 16:  # one-byte tag and length: the common case
        return bytes((number << 3 | 2, size)) + payload
    return varint(number << 3 | 2) + varint(size) + payload


def _text(value: str) -> bytes:
    return value.encode("utf-8", "replace")


def any_value(value: Any, depth: int = 0) -> bytes:
    """The fields of an ``AnyValue`` holding ``value`` (JSON-like: str, bool, int, float, list, dict)."""
    if isinstance(value, str):
        return field(1, _text(value))
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        if -_INT64 <= value < _INT64:
            return b"\x18" + varint(value)
        return field(1, _text(str(value)))  # beyond int64: kept as text
    if isinstance(value, float):
        return b"\x21" + _double(value)
    if value is None:
        return b""
    if depth >= _MAX_DEPTH:
        return field(1, _text(repr(value)))
    if isinstance(value, (list, tuple)):
        return field(5, b"".join(field(1, any_value(item, depth + 1)) for item in value))
    if isinstance(value, Mapping):
        return field(6, key_values(value, 1, depth + 1))
    return field(1, _text(str(value)))


def key_value(key: str, value: Any, depth: int = 0) -> bytes:
    """The fields of a ``KeyValue``."""
    return field(1, _text(key)) + field(2, any_value(value, depth))


def key_values(items: Mapping[str, Any], number: int, depth: int = 0) -> bytes:
    """Every pair of ``items`` as a repeated ``KeyValue`` field ``number``."""
    return b"".join(field(number, key_value(str(k), v, depth)) for k, v in items.items())
