"""Settings of the ratelimit feature."""

from __future__ import annotations

from ._base import SettingsSection


class RateLimitSettings(SettingsSection):
    """Knobs of the ratelimit feature."""
