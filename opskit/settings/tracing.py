"""Settings of the tracing feature."""

from __future__ import annotations

from ._base import SettingsSection


class TracingSettings(SettingsSection):
    """Knobs of the tracing feature."""
