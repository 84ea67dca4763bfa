"""The byte layout shared by every metrics file and in-memory store, and its reader.

A store is one buffer: a header, then entries appended one after another and never moved::

    header  (32 bytes)  magic, bytes used, pid, process start time
    entry   (16 bytes)  key length, value count, exemplar count, merge mode
            key         JSON ``[metric name, [label values...]]``, padded to 8 bytes
            values      float64 each (counter value, gauge value, histogram buckets then sum)
            exemplars   48 bytes each: 32-byte trace id, float64 value, float64 unix timestamp

The writer fills an entry completely before it advances "bytes used", so a reader in another
process never sees half an entry. Keys are byte-identical across processes (same JSON), so
merging is a dict lookup on raw bytes; JSON is parsed once per series, at exposition.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "ABSORBED",
    "ENTRY",
    "EXEMPLAR_BYTES",
    "EXEMPLAR_DOUBLES",
    "Entry",
    "GAUGE_MAX",
    "GAUGE_MIN",
    "GAUGE_SUM",
    "HEADER",
    "Header",
    "MAGIC",
    "MERGE_MODES",
    "SUM",
    "TRACE_ID_BYTES",
    "USED_OFFSET",
    "encode",
    "entries",
    "entry_size",
    "padded",
    "read_header",
]


MAGIC: Final = b"OPSKMET1"
HEADER: Final = struct.Struct("<8sQqQ")
ENTRY: Final = struct.Struct("<IIII")
USED_OFFSET: Final = 8
EXEMPLAR_BYTES: Final = 48
EXEMPLAR_DOUBLES: Final = EXEMPLAR_BYTES // 8
TRACE_ID_BYTES: Final = 32

# How the values of one series combine across processes.
SUM: Final = 0  # counters and histograms: summed over live, dead and archived processes
GAUGE_SUM: Final = 1  # gauges: summed over live processes only
GAUGE_MAX: Final = 2
GAUGE_MIN: Final = 3
ABSORBED: Final = 9  # archive only: the files whose counts it holds (key = JSON list of names)

MERGE_MODES: Final = {"sum": GAUGE_SUM, "max": GAUGE_MAX, "min": GAUGE_MIN}


def padded(n: int) -> int:
    """``n`` rounded up to a multiple of 8."""
    return (n + 7) & ~7


def entry_size(key_len: int, n_values: int, n_exemplars: int) -> int:
    """Bytes taken by an entry."""
    return ENTRY.size + padded(key_len) + 8 * n_values + EXEMPLAR_BYTES * n_exemplars


@dataclass(slots=True)
class Header:
    """The fixed start of a store."""

    used: int
    pid: int
    start_time: int


def read_header(buf: bytes | memoryview) -> Header | None:
    """The header of ``buf``, or ``None`` when it is not (yet) a metrics store."""
    if len(buf) < HEADER.size:
        return None
    magic, used, pid, start_time = HEADER.unpack_from(buf, 0)
    if magic != MAGIC or used < HEADER.size or used > len(buf):
        return None
    return Header(used, pid, start_time)


Exemplar = tuple[str, float, float]  # trace id, value, unix timestamp


@dataclass(slots=True)
class Entry:
    """One series as stored: its values and exemplars (``None`` where none was recorded)."""

    key: bytes
    mode: int
    values: list[float]
    exemplars: list[Exemplar | None] = field(default_factory=list)


def _exemplar(buf: bytes | memoryview, offset: int) -> Exemplar | None:
    value, ts = struct.unpack_from("<dd", buf, offset + TRACE_ID_BYTES)
    if ts <= 0:
        return None
    raw = bytes(buf[offset : offset + TRACE_ID_BYTES]).rstrip(b"\0")
    try:
        trace_id = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    # A torn read (the writer mid-update in another process) must not produce a broken label.
    if not trace_id or not trace_id.isalnum():
        return None
    return trace_id, value, ts


def entries(buf: bytes | memoryview, used: int) -> Iterator[Entry]:
    """Every complete entry in ``buf[:used]``."""
    offset = HEADER.size
    while offset + ENTRY.size <= used:
        key_len, n_values, n_exemplars, mode = ENTRY.unpack_from(buf, offset)
        size = entry_size(key_len, n_values, n_exemplars)
        if offset + size > used:
            break
        key_at = offset + ENTRY.size
        key = bytes(buf[key_at : key_at + key_len])
        values_at = key_at + padded(key_len)
        values = list(struct.unpack_from(f"<{n_values}d", buf, values_at))
        ex_at = values_at + 8 * n_values
        exemplars = [_exemplar(buf, ex_at + EXEMPLAR_BYTES * i) for i in range(n_exemplars)]
        yield Entry(key, mode, values, exemplars)
        offset += size


def encode(pid: int, start_time: int, items: list[Entry]) -> bytes:
    """A complete store holding ``items`` (used to write the archive)."""
    parts = [b""]
    total = HEADER.size
    for item in items:
        n_ex = len(item.exemplars)
        parts.append(ENTRY.pack(len(item.key), len(item.values), n_ex, item.mode))
        parts.append(item.key.ljust(padded(len(item.key)), b"\0"))
        parts.append(struct.pack(f"<{len(item.values)}d", *item.values))
        for ex in item.exemplars:
            if ex is None:
                parts.append(bytes(EXEMPLAR_BYTES))
            else:
                tid = ex[0].encode("ascii")[:TRACE_ID_BYTES].ljust(TRACE_ID_BYTES, b"\0")
                parts.append(tid + struct.pack("<dd", ex[1], ex[2]))
        total += entry_size(len(item.key), len(item.values), n_ex)
    parts[0] = HEADER.pack(MAGIC, total, pid, start_time)
    return b"".join(parts)
