"""The instruction count's stretching of time-based settings by valgrind's slowdown."""

from __future__ import annotations

import pytest

from bench.instructions import _TIME_SETTINGS, dilated_settings
from opskit.settings import Settings


def test_each_stretched_setting_starts_from_the_real_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """The count stretches each setting from its real default, up to the largest value it accepts."""
    for env_name, (default, top) in _TIME_SETTINGS.items():
        name = env_name.removeprefix("OPSKIT_").lower()
        assert Settings.model_fields[name].default == default, name
        monkeypatch.setenv(env_name, str(top))
        assert getattr(Settings(), name) == top
        monkeypatch.setenv(env_name, str(top * 1.01))
        with pytest.raises(ValueError, match=name):
            Settings()
        monkeypatch.delenv(env_name)


def test_settings_are_stretched_within_their_bounds() -> None:
    assert dilated_settings(20) == {"OPSKIT_RUNTIME_LAG_INTERVAL": "1", "OPSKIT_RUNTIME_BLOCKED_THRESHOLD": "2"}
    assert dilated_settings(1000)["OPSKIT_RUNTIME_LAG_INTERVAL"] == "10"
