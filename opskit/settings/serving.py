"""Settings of the serving feature."""

from __future__ import annotations

from ._base import SettingsSection


class ServingSettings(SettingsSection):
    """Knobs of the serving feature."""
