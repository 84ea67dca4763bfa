"""The two log record encoders write the same records: the native one from the line as a dict, the
Python one from the line rendered as JSON (its reference), for every kind of key and value."""

from __future__ import annotations

import math
import random
import time
from typing import Any

import orjson
import pytest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ScopeLogs

from opskit.logging import record
from opskit.logging.record import encode_line, encode_record

native = record.encode_native
needs_native = pytest.mark.skipif(native is None, reason="built with OPSKIT_BUILD_NATIVE=0")

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
INT64 = 1 << 63


def _comparable(encoded: LogRecord) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A record's fields, and its attributes as a sorted list (the encoders order them differently)."""
    pairs = sorted((pair.key, pair.value.SerializeToString()) for pair in encoded.attributes)
    rest = LogRecord()
    rest.CopyFrom(encoded)
    del rest.attributes[:]
    return rest.SerializeToString(deterministic=True), pairs


def _native(time_ns: int, line: dict[str, Any]) -> LogRecord | None:
    assert native is not None
    encoded = native(time_ns, line)
    if encoded is None:
        return None
    (found,) = ScopeLogs.FromString(encoded).log_records
    copy = LogRecord()
    copy.CopyFrom(found)
    return copy


def _python(time_ns: int, line: dict[str, Any]) -> LogRecord:
    found = LogRecord()
    found.ParseFromString(encode_record(time_ns, orjson.dumps(line)))
    return found


def _text(rng: random.Random) -> str:
    size = rng.choice([0, 1, 5, 40, 126, 127, 128, 300, 20_000])
    alphabet = rng.choice(["ascii", "latin", "wide", "emoji", "controls"])
    if alphabet == "ascii":
        return "".join(rng.choice("abcXYZ019 _-/{}") for _ in range(size))
    if alphabet == "latin":
        return "".join(rng.choice("éàüßñ") for _ in range(size))
    if alphabet == "wide":
        return "".join(rng.choice("日本語中文") for _ in range(size))
    if alphabet == "emoji":
        return "🙂" * (size // 4)
    return "".join(rng.choice('\n\r\t\x00\x1b"\\') for _ in range(size))


def _value(rng: random.Random) -> Any:
    kind = rng.randrange(9)
    if kind == 0:
        return _text(rng)
    if kind == 1:
        return rng.choice([0, 1, -1, 127, 128, 2**31, INT64 - 1, -INT64, rng.randrange(-(2**40), 2**40)])
    if kind == 2:
        return rng.choice([0.0, -0.0, 0.412, 1e300, -2.5, math.nan, math.inf, -math.inf, rng.random()])
    if kind == 3:
        return rng.choice([True, False])
    if kind == 4:
        return None
    if kind == 5:
        return rng.choice(["info", "INFO", "Warning", "error", "critical", "custom", "", "ínfo", "ﬁ" * 40, "w" * 70])
    if kind == 6:
        return rng.choice([TRACE, TRACE.upper(), "0" * 32, "zz" * 16, TRACE[:31], SPAN, "0" * 16, SPAN + "0"])
    return _text(rng)[:20]


def _line(rng: random.Random) -> dict[str, Any]:
    keys = ["level", "event", "timestamp", "trace_id", "span_id", "logger", "route", "status", "path", "n"]
    line: dict[str, Any] = {}
    for _ in range(rng.randrange(0, 14)):
        key = rng.choice(keys) if rng.random() < 0.7 else _text(rng)[:30]
        line[key] = _value(rng)
    return line


@needs_native
class TestSameRecords:
    def test_random_lines_encode_alike(self) -> None:
        """Thousands of random lines (every value kind, multi-byte lengths, hostile text, bad IDs):
        the native encoder's record decodes the same as the Python encoder's."""
        rng = random.Random(20261201)
        for _ in range(1500):
            line = _line(rng)
            stamp = rng.randrange(0, 2**63)
            found = _native(stamp, line)
            assert found is not None, line
            assert _comparable(found) == _comparable(_python(stamp, line)), line

    def test_the_access_line(self) -> None:
        """The access log's line: severity, body, attributes, trace context and the tap's clock read."""
        line = {
            "timestamp": "2026-01-01T00:00:00.000000Z",
            "level": "info",
            "event": "request",
            "route": "/items/{item_id}",
            "status": 200,
            "duration_ms": 0.412,
            "trace_id": TRACE,
            "span_id": SPAN,
        }
        stamp = time.time_ns()
        found = _native(stamp, line)
        assert found is not None
        assert (found.time_unix_nano, found.observed_time_unix_nano) == (stamp, stamp)
        assert (found.severity_number, found.severity_text, found.body.string_value) == (9, "INFO", "request")
        assert (found.trace_id.hex(), found.span_id.hex()) == (TRACE, SPAN)
        assert [pair.key for pair in found.attributes] == ["route", "status", "duration_ms"]
        assert _comparable(found) == _comparable(_python(stamp, line))

    @pytest.mark.parametrize(
        "value",
        [{"nested": 1}, [1, 2], 2**63, -(2**63) - 1, "\ud800", type("Text", (str,), {})("x"), b"bytes", object()],
        ids=["dict", "list", "past-int64", "below-int64", "surrogate", "str-subclass", "bytes", "object"],
    )
    def test_values_it_leaves_to_python(self, value: Any) -> None:
        """What JSON rendering may change (nested values, ints past int64, objects rendered by repr) or
        cannot hold is declined as a whole line, never written differently."""
        assert native is not None
        assert native(1, {"event": "e", "v": value}) is None
        assert native(1, {"level": value}) is None or isinstance(value, (dict, list, int, bytes, object))

    def test_keys_it_leaves_to_python(self) -> None:
        assert native is not None
        assert native(1, {1: "x"}) is None  # type: ignore[dict-item]
        assert native(1, {"\udcff": "x"}) is None

    def test_bad_arguments_raise(self) -> None:
        assert native is not None
        with pytest.raises(TypeError):
            native(1, [])  # type: ignore[arg-type]
        with pytest.raises(OverflowError):
            native(-1, {})


class TestExportPath:
    def test_a_rendered_line_becomes_the_same_record_either_way(self) -> None:
        """The export thread's path for rendered lines (structlog, the stdlib bridge): parsed, then the
        native encoder, or the Python one for what it declines; text that is not JSON is the body."""
        line = {"level": "warning", "event": "slow", "db": "orders", "ms": 120, "trace_id": TRACE}
        rendered = orjson.dumps(line) + b"\n"
        (found,) = ScopeLogs.FromString(encode_line(5, rendered)).log_records
        assert _comparable(found) == _comparable(_python(5, line))
        (nested,) = ScopeLogs.FromString(encode_line(5, orjson.dumps({"event": "e", "v": {"a": 1}}))).log_records
        assert nested.attributes[0].value.kvlist_value.values[0].key == "a"
        (text,) = ScopeLogs.FromString(encode_line(5, b"plain [info] text\n")).log_records
        assert text.body.string_value == "plain [info] text"
