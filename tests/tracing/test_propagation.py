"""W3C traceparent, tracestate and baggage parsing of untrusted headers."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import baggage
from opentelemetry.context import Context

from opskit.tracing.propagation import extract_baggage, parse_traceparent, parse_tracestate

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


class TestTraceparent:
    def test_valid_header_gives_a_remote_parent(self) -> None:
        """A well-formed version-00 header yields its ids, sampled flag and is_remote."""
        parent = parse_traceparent(f"00-{TRACE}-{SPAN}-01".encode())
        assert parent is not None
        assert (f"{parent.trace_id:032x}", f"{parent.span_id:016x}") == (TRACE, SPAN)
        assert parent.trace_flags.sampled and parent.is_remote

    def test_unknown_flags_keep_only_sampled(self) -> None:
        """Flag bits other than 'sampled' are not propagated as if understood."""
        parent = parse_traceparent(f"00-{TRACE}-{SPAN}-ff".encode())
        assert parent is not None and int(parent.trace_flags) == 1

    def test_future_version_may_append_fields(self) -> None:
        """A later version's extra fields after a '-' are accepted (forward compatibility)."""
        parent = parse_traceparent(f"01-{TRACE}-{SPAN}-00-what-ever".encode())
        assert parent is not None and not parent.trace_flags.sampled

    @pytest.mark.parametrize(
        "value",
        [
            b"",
            f"00-{TRACE}-{SPAN}-0".encode(),
            f"00-{TRACE}-{SPAN}-01".encode() + b"x" * 200,
            f"00-{TRACE}-{SPAN}-01-".encode(),
            f"0g-{TRACE}-{SPAN}-01".encode(),
            f"00-{TRACE[:-1]}Z-{SPAN}-01".encode(),
            f"00-{TRACE}-{SPAN}-0\n".encode(),
            f"00 {TRACE} {SPAN} 01".encode(),
            f"00-{'0' * 32}-{SPAN}-01".encode(),
            f"00-{TRACE}-{'0' * 16}-01".encode(),
            f"ff-{TRACE}-{SPAN}-01".encode(),
            f"00-{TRACE}-{SPAN}-01".encode("utf-16"),
        ],
    )
    def test_invalid_headers_are_ignored(self, value: bytes) -> None:
        """Wrong length, charset, separators, zero ids or version ff give no parent, never an error."""
        assert parse_traceparent(value) is None


class TestTracestate:
    def test_members_are_kept_in_order(self) -> None:
        """Valid members, including tenant@system keys, survive in their order."""
        state = parse_tracestate(b"congo=t61rcWkgMzE, rojo@vendor=00f067aa0ba902b7")
        assert state is not None and list(state.items()) == [("congo", "t61rcWkgMzE"), ("rojo@vendor", SPAN)]

    @pytest.mark.parametrize(
        "value",
        [
            b"a=1,a=2",
            b"UPPER=1",
            b"k=v\nx",
            b"novalue",
            b"k=" + b"x" * 300,
            ",".join(f"k{i}=v" for i in range(33)).encode(),
            b"k=v," * 400,
        ],
        ids=["duplicate", "uppercase-key", "newline", "no-value", "long-value", "33-members", "too-long"],
    )
    def test_invalid_tracestate_is_dropped_silently(self, value: bytes, caplog: pytest.LogCaptureFixture) -> None:
        """A tracestate breaking a W3C rule is dropped whole and nothing is logged."""
        with caplog.at_level(logging.DEBUG):
            assert parse_tracestate(value) is None
        assert caplog.records == []


class TestBaggage:
    def test_members_reach_the_context(self) -> None:
        """Valid members are percent-decoded into the context's baggage; properties are ignored."""
        ctx = extract_baggage(b"user=alice, tier=gold%20plus;prop=1", Context())
        assert baggage.get_all(ctx) == {"user": "alice", "tier": "gold plus"}

    def test_invalid_members_are_skipped(self) -> None:
        """A member with a bad key or an encoded control character is left out, the rest kept."""
        ctx = extract_baggage(b"ok=1,bad key=2,nl=a%0Ab,=x", Context())
        assert baggage.get_all(ctx) == {"ok": "1"}

    @pytest.mark.parametrize("value", [b"k=v," * 2100, ",".join(f"k{i}=v" for i in range(65)).encode()])
    def test_oversized_header_adds_nothing(self, value: bytes) -> None:
        """Over 8192 bytes or 64 members: the whole header is ignored."""
        assert baggage.get_all(extract_baggage(value, Context())) == {}
