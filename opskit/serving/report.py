"""The effective configuration, each value with where it came from (for `opskit config`)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices
from pydantic_settings import EnvSettingsSource

from ..settings import Settings, env_name

__all__ = ["Entry", "entries", "render"]


@dataclass(frozen=True)
class Entry:
    """One setting: field name, the variable that sets it, its value and its source."""

    field: str
    variable: str
    value: Any
    source: str  # "default", "override", or the name of the environment variable


def _names(field: str) -> list[str]:
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices if str(choice) != field]
    return [env_name(field)]


def entries(settings: Settings, overrides: Mapping[str, Any]) -> Iterator[Entry]:
    """Every field of ``settings``; the source is found the way pydantic-settings found the value."""
    environment = EnvSettingsSource(Settings).env_vars  # what the settings object read (lower-cased names)
    for field in Settings.model_fields:
        names = _names(field)
        if field in overrides:
            source = "override"
        else:
            source = next((name for name in names if name.lower() in environment), "default")
        yield Entry(field, names[0], getattr(settings, field), source)


def render(settings: Settings, overrides: Mapping[str, Any], derived: Mapping[str, str]) -> str:
    """A plain table: variable, value, source; then the derived values (worker count...)."""
    rows = [(e.variable, _redact(e.field, _show(e.value)), e.source) for e in entries(settings, overrides)]
    rows += [(name, value, "derived") for name, value in derived.items()]
    width = [max(len(row[i]) for row in rows) for i in range(2)]
    return "\n".join(f"{a:<{width[0]}}  {b:<{width[1]}}  {c}" for a, b, c in rows)


_SECRET_FIELD = re.compile(r"password|secret|token|api_key|headers", re.IGNORECASE)


def _redact(field: str, text: str) -> str:
    if _SECRET_FIELD.search(field) and text not in ("(unset)", "(empty)", ""):
        return "[REDACTED]"
    if "://" in text and "@" in text:
        parts = urlsplit(text)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":[REDACTED]@", 1)
            return urlunsplit(parts._replace(netloc=netloc))
    return text


def _show(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) if value else "(empty)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
