"""Queue time: how long a request waited between the load balancer and the app.

Load balancers stamp the moment they received a request in ``X-Request-Start``: nginx
(``t=${msec}``: seconds with milliseconds), Apache's ``mod_headers`` (``t=%t``: microseconds),
Heroku's router and others (milliseconds since the epoch). The unit is told apart by magnitude: a
time since 1970 in seconds has 10 digits, in milliseconds 13, in microseconds 16, in nanoseconds
19. The header is believed only when the request's TCP peer is a trusted proxy (anyone else could
claim any queue time), and a value that cannot be the time of a request waiting now (garbage,
negative, more than an hour ago: clock skew or a forged value) is ignored and counted.
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = ["MAX_QUEUE_SECONDS", "Ignored", "parse_request_start", "queue_seconds"]

#: A queue time beyond this is a wrong clock, not a wait.
MAX_QUEUE_SECONDS: Final = 3600.0
_MAX_LENGTH = 40
_DIGITS = frozenset(b"0123456789")
Ignored = Literal["malformed", "negative", "too_large"]


def parse_request_start(value: bytes) -> float | None:
    """Seconds since the epoch from an ``X-Request-Start`` value, or ``None`` when it is not one."""
    if len(value) > _MAX_LENGTH:
        return None
    text = value.strip()
    if text[:2] in (b"t=", b"T="):
        text = text[2:]
    whole, dot, fraction = text.partition(b".")
    if not whole or not _DIGITS.issuperset(whole) or (dot and (not fraction or not _DIGITS.issuperset(fraction))):
        return None
    number = float(text)
    # Seconds, milliseconds, microseconds or nanoseconds since 1970, by magnitude (10, 13, 16, 19 digits).
    for scale in (1.0, 1e3, 1e6, 1e9):
        if number < 1e11 * scale:
            return number / scale
    return None


def queue_seconds(value: bytes, now: float) -> float | Ignored:
    """How long ago (``now`` is the wall clock) the load balancer stamped ``value``, or why it is ignored."""
    start = parse_request_start(value)
    if start is None:
        return "malformed"
    waited = now - start
    if waited < 0:
        return "negative"
    if waited > MAX_QUEUE_SECONDS:
        return "too_large"
    return waited
