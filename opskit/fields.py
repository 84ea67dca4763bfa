"""Bounds for values the app or its clients put into signals: one policy for logs, spans and labels.

Whatever reaches a log line, a span attribute or a metric label from outside opskit (an
annotation, a captured header) goes through :class:`FieldPolicy` first: values longer than
:data:`MAX_FIELD` characters are cut, values that are not primitives become their text, values of
sensitive keys (``OPSKIT_LOG_REDACT_KEYS``) become ``[REDACTED]``. orjson escapes what is left,
so no value can split a line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["MAX_FIELD", "MAX_FIELDS", "MAX_KEY", "REDACTED", "FieldPolicy", "FieldValue"]

#: Longest text value kept (a hostile User-Agent, path or annotation must not make a line unbounded).
MAX_FIELD = 1024
#: Longest key kept.
MAX_KEY = 128
#: Most annotations one request keeps; later new keys are dropped.
MAX_FIELDS = 64
REDACTED = "[REDACTED]"

FieldValue = str | bool | int | float | None
_PRIMITIVES = frozenset({bool, int, float})
_UNDECIDED: Any = object()


def bound(value: object) -> FieldValue:
    """``value`` as a primitive a log line, a span and a label all carry, text cut to :data:`MAX_FIELD`."""
    kind = type(value)
    if kind is str:
        return value[:MAX_FIELD] if len(value) > MAX_FIELD else value  # type: ignore[index,arg-type,return-value]
    if kind in _PRIMITIVES or value is None:
        return value  # type: ignore[return-value]
    try:
        text = str(value)
    except Exception:
        text = f"<unprintable {kind.__name__}>"
    return text[:MAX_FIELD]


class FieldPolicy:
    """Cleans fields from outside opskit: bounded keys and values, sensitive keys redacted."""

    __slots__ = ("_decided", "_keys", "_reserved")

    def __init__(self, redact_keys: Iterable[str], reserved: Iterable[str] = ()) -> None:
        self._keys = frozenset(k.lower() for k in redact_keys)
        self._reserved = frozenset(reserved)
        # What each key seen becomes: (its bounded self, redacted?), or None when it is skipped.
        self._decided: dict[object, tuple[str, bool] | None] = {}

    def sensitive(self, key: str) -> bool:
        """Whether the value of ``key`` must never be written (case-insensitive)."""
        return key.lower() in self._keys

    def _decide(self, key: object) -> tuple[str, bool] | None:
        decision = None
        if type(key) is str and key not in self._reserved:
            decision = (key[:MAX_KEY], key.lower() in self._keys)
        if len(self._decided) < 10_000:
            self._decided[key] = decision
        return decision

    def merge(self, target: dict[str, Any], fields: Mapping[str, object]) -> None:
        """Add the cleaned ``fields`` to ``target``; keys opskit writes itself (``reserved``) are skipped."""
        decided = self._decided
        roomy = len(target) + len(fields) <= MAX_FIELDS
        for key, value in fields.items():
            decision = decided.get(key, _UNDECIDED)
            if decision is _UNDECIDED:
                decision = self._decide(key)
            if decision is None:
                continue
            name, redacted = decision
            if not roomy and len(target) >= MAX_FIELDS and name not in target:
                continue
            if redacted:
                target[name] = REDACTED
            elif type(value) is str:
                target[name] = value if len(value) <= MAX_FIELD else value[:MAX_FIELD]
            else:
                target[name] = bound(value)
