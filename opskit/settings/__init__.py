"""opskit's one settings object: the only place that reads the environment.

Every knob is a field with a default and an environment variable: ``OPSKIT_<FIELD>`` for
opskit's own, the standard names (``OTEL_*``, ``WEB_CONCURRENCY``, ``PROMETHEUS_MULTIPROC_DIR``...)
where one exists. Each feature keeps its knobs in a section module; :class:`Settings` joins them.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import AliasChoices, ValidationError
from pydantic.fields import FieldInfo

from ._base import ENV_PREFIX, ConfigError
from .core import CoreSettings
from .loop import LoopSettings
from .metrics import MetricsSettings
from .otlp import OtlpSettings
from .overload import OverloadSettings
from .ratelimit import RateLimitSettings
from .serving import ServingSettings
from .signals import SignalSettings
from .tracing import TracingSettings

__all__ = ["ConfigError", "Settings", "env_name", "env_vars", "load_settings"]


class Settings(
    SignalSettings,
    OtlpSettings,
    OverloadSettings,
    LoopSettings,
    ServingSettings,
    RateLimitSettings,
    TracingSettings,
    MetricsSettings,
    CoreSettings,
):
    """Every opskit setting. Build it with :func:`load_settings` to get readable errors."""


def env_name(field: str, info: FieldInfo | None = None) -> str:
    """The environment variable that sets ``field`` (the first of its names)."""
    info = info or Settings.model_fields[field]
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    if isinstance(alias, str):
        return alias
    return ENV_PREFIX + field.upper()


def env_vars() -> dict[str, str]:
    """Map every environment variable opskit reads to its field name."""
    names: dict[str, str] = {}
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [env_name(field, info)]
        for choice in choices:
            if isinstance(choice, str) and choice != field:
                names[choice.upper()] = field
    return names


def _variable_set_for(field: str) -> str:
    """The variable the user actually set for ``field`` (of its several names), else its primary name."""
    info = Settings.model_fields[field]
    alias = info.validation_alias
    names = [str(c) for c in alias.choices] if isinstance(alias, AliasChoices) else [env_name(field, info)]
    present = {key.upper() for key in os.environ}
    for name in names:
        if name.upper() in present and name != field:
            return name
    return env_name(field, info)


def _field_of(loc: tuple[int | str, ...]) -> str:
    head = str(loc[0]) if loc else ""
    if head in Settings.model_fields:
        return head
    return env_vars().get(head.upper(), head)


def load_settings(settings: Settings | None = None, /, **overrides: Any) -> Settings:
    """Read the environment (or take ``settings``) and apply keyword ``overrides``.

    Raises :class:`ConfigError` naming the variable, the bad value and the accepted values.
    """
    try:
        if settings is None:
            return Settings(**overrides)
        if not overrides:
            return settings
        return Settings(**{**settings.model_dump(), **overrides})
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = _field_of(error["loc"])
            var = _variable_set_for(field) if field in Settings.model_fields else field
            lines.append(f"{var}={error.get('input')!r}: {error['msg']}")
        raise ConfigError("invalid opskit configuration:\n  " + "\n  ".join(lines)) from None
