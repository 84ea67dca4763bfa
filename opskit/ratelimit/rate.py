"""Rates in the familiar `limits` syntax, extended with a burst: ``"5/second burst=10, 1000/hour"``."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import limits

__all__ = ["Rate", "parse_rates"]

_BURST = re.compile(r"(?:^|\s)burst\s*=\s*(\d+)\s*$", re.IGNORECASE)
_SEPARATORS = re.compile(r"[,;|]")
_UNITS = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))


@dataclass(frozen=True, slots=True)
class Rate:
    """A token bucket: ``amount`` tokens refill every ``period`` seconds, the bucket holds ``burst``."""

    amount: int
    period: float
    burst: int
    interval: float = field(init=False, repr=False, compare=False)
    """Seconds it takes to refill one token."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "interval", self.period / self.amount)

    @property
    def window(self) -> int:
        """Whole seconds an empty bucket takes to fill up again (the `w` of `RateLimit-Policy`)."""
        return max(1, math.ceil(self.burst * self.interval))

    def __str__(self) -> str:
        unit, seconds = next((u, n) for u, n in _UNITS if self.period % n == 0)
        count = self.period / seconds
        text = f"{self.amount} per {count:g} {unit}{'' if count == 1 else 's'}"
        return text if self.burst == self.amount else f"{text} (burst {self.burst})"


def parse_rates(text: str) -> tuple[Rate, ...]:
    """Parse ``"RATE [burst=N]"`` items separated by ``,``, ``;`` or ``|``.

    ``RATE`` is anything :func:`limits.parse` accepts (``100/second``, ``10 per minute``,
    ``1000/2 hours``). ``burst=N`` sets the bucket size of the rate it follows, so
    ``"5/second; burst=10"`` and ``"5/second burst=10"`` mean the same. Without a burst the bucket
    holds one period's amount. Raises :class:`ValueError` on anything else.
    """
    rates: list[Rate] = []
    for raw in _SEPARATORS.split(text):
        item = raw.strip()
        if not item:
            continue
        burst: int | None = None
        match = _BURST.search(item)
        if match:
            burst = int(match.group(1))
            item = item[: match.start()].strip()
        if not item:
            if not rates or burst is None:
                raise ValueError(f"burst without a rate in {text!r}")
            rates[-1] = _with_burst(rates[-1], burst)
            continue
        try:
            parsed = limits.parse(item)
        except ValueError:
            raise ValueError(f"cannot parse rate {item!r}: expected e.g. '100/second burst=200'") from None
        if parsed.amount < 1:
            raise ValueError(f"rate {item!r} must allow at least one request")
        rate = Rate(amount=parsed.amount, period=float(parsed.get_expiry()), burst=parsed.amount)
        rates.append(rate if burst is None else _with_burst(rate, burst))
    if not rates:
        raise ValueError(f"no rate in {text!r}")
    return tuple(rates)


def _with_burst(rate: Rate, burst: int) -> Rate:
    if burst < 1:
        raise ValueError("burst must be at least 1")
    return Rate(amount=rate.amount, period=rate.period, burst=burst)
