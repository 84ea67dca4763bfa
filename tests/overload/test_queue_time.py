"""Queue time from X-Request-Start: every form load balancers send, and values that cannot be believed."""

from __future__ import annotations

import pytest

from opskit.overload import MAX_QUEUE_SECONDS, parse_request_start, queue_seconds

NOW = 1_764_000_000.250  # a wall-clock time of 2025


class TestForms:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (b"t=1764000000.123", 1764000000.123),  # nginx: t=${msec}
            (b"t=1764000000", 1764000000.0),  # whole seconds
            (b"1764000000123", 1764000000.123),  # Heroku and others: milliseconds
            (b"t=1764000000123", 1764000000.123),  # milliseconds after t=
            (b"t=1764000000123456", 1764000000.123456),  # Apache mod_headers %t: microseconds
            (b"1764000000123456789", 1764000000.123456789),  # nanoseconds
            (b"  t=1764000000.5 ", 1764000000.5),  # surrounding blanks
            (b"T=1764000000.5", 1764000000.5),
        ],
    )
    def test_each_unit_is_told_apart_by_magnitude(self, value: bytes, expected: float) -> None:
        """Seconds, milliseconds, microseconds and nanoseconds since the epoch, with or without ``t=``."""
        parsed = parse_request_start(value)
        assert parsed == pytest.approx(expected, abs=1e-6)

    def test_queue_time_is_now_minus_the_stamp(self) -> None:
        """A request stamped 250 ms ago waited 250 ms, in every unit."""
        for value in (b"t=1764000000.000", b"1764000000000", b"t=1764000000000000"):
            assert queue_seconds(value, NOW) == pytest.approx(0.25)


class TestHostileValues:
    @pytest.mark.parametrize(
        "value",
        [
            b"",
            b"t=",
            b"garbage",
            b"t=abc",
            b"t=1764000000.",
            b"t=.5",
            b"t=1.2.3",
            b"t=-1764000000",
            b"t=+1764000000",
            b"t=1e9",
            b"t=nan",
            b"t=inf",
            b"t=0x1234",
            b"t=1764000000;1764000000",
            b"t=1764000000, t=1764000001",
            b"\xff\xfe1764000000",
            b"1" * 41,  # longer than any timestamp
            b"9" * 40,  # beyond nanoseconds
            b"t=" + b"1" * 10_000,  # huge
        ],
    )
    def test_garbage_is_malformed(self, value: bytes) -> None:
        """Anything but digits with at most one dot (after an optional ``t=``) is not a time."""
        assert parse_request_start(value) is None
        assert queue_seconds(value, NOW) == "malformed"

    def test_a_stamp_in_the_future_is_negative_and_ignored(self) -> None:
        """A load balancer whose clock runs ahead gives a negative wait: ignored, not recorded as 0."""
        assert queue_seconds(b"t=1764000001.000", NOW) == "negative"

    def test_more_than_an_hour_is_a_wrong_clock(self) -> None:
        """An hour and a second ago is a skewed clock or a forged value, not a wait; an hour exactly is believed."""
        assert queue_seconds(str(NOW - MAX_QUEUE_SECONDS - 1).encode(), NOW) == "too_large"
        assert queue_seconds(b"t=5", NOW) == "too_large"  # 5 seconds after 1970
        assert queue_seconds(str(NOW - MAX_QUEUE_SECONDS).encode(), NOW) == pytest.approx(MAX_QUEUE_SECONDS)
