"""Label values from an open set, kept bounded: the first ``cap`` distinct ones, then ``other``."""

from __future__ import annotations

from typing import Final

__all__ = ["OTHER", "BoundedLabels"]

OTHER: Final = "other"


class BoundedLabels:
    """Maps values to themselves until ``cap`` distinct ones were seen; every later one is ``other``.

    ``overflowed`` counts the values mapped to ``other`` (each time, not each distinct value).
    """

    __slots__ = ("_known", "cap", "overflowed")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._known: dict[str, str] = {}
        self.overflowed = 0

    def __call__(self, value: str) -> str:
        label = self._known.get(value)
        if label is not None:
            return label
        if len(self._known) < self.cap:
            self._known[value] = value
            return value
        self.overflowed += 1
        return OTHER
