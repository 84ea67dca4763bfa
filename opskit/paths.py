"""Path patterns of the settings that exclude or exempt paths: exact paths, or prefixes ending in ``*``."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["PathPatterns"]


class PathPatterns:
    """A set of exact paths and ``prefix*`` patterns, matched with one set lookup and one ``startswith``."""

    __slots__ = ("exact", "prefixes")

    def __init__(self, patterns: Iterable[str]) -> None:
        patterns = tuple(patterns)
        self.exact = frozenset(p for p in patterns if not p.endswith("*"))
        self.prefixes = tuple(p[:-1] for p in patterns if p.endswith("*"))

    def __contains__(self, path: str) -> bool:
        return path in self.exact or (bool(self.prefixes) and path.startswith(self.prefixes))
