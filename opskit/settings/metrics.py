"""Settings of the metrics feature."""

from __future__ import annotations

from ._base import SettingsSection


class MetricsSettings(SettingsSection):
    """Knobs of the metrics feature."""
