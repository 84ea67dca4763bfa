"""The instruction count's stretching of time-based settings by valgrind's slowdown."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.instructions import _TIME_SETTINGS, dilated_settings
from bench.servers import app_env
from bench.variants import BY_NAME
from opskit.settings import Settings


def test_each_stretched_setting_starts_from_what_the_servers_run_with(monkeypatch: pytest.MonkeyPatch) -> None:
    """The count stretches each setting from its default or the bench servers' own value, up to the
    largest value it accepts."""
    server_env = app_env(BY_NAME["opskit-all"], "redis://127.0.0.1:1/0", Path("marker"))
    for env_name, (name, default, top) in _TIME_SETTINGS.items():
        expected = float(server_env[env_name]) if env_name in server_env else Settings.model_fields[name].default
        assert expected == default, name
        monkeypatch.setenv(env_name, str(top))
        assert getattr(Settings(), name) == top
        monkeypatch.setenv(env_name, str(top * 1.01))
        with pytest.raises(ValueError, match=f"{name}|{env_name}"):
            Settings()
        monkeypatch.delenv(env_name)


def test_settings_are_stretched_within_their_bounds() -> None:
    assert dilated_settings(20) == {
        "OPSKIT_RUNTIME_LAG_INTERVAL": "1",
        "OPSKIT_RUNTIME_BLOCKED_THRESHOLD": "2",
        "OPSKIT_METRICS_IN_PROGRESS_INTERVAL": "20",
        "OTEL_METRIC_EXPORT_INTERVAL": "20000",
        "OTEL_BLRP_SCHEDULE_DELAY": "20000",
        "OTEL_BSP_SCHEDULE_DELAY": "100000",
    }
    assert dilated_settings(1000)["OPSKIT_RUNTIME_LAG_INTERVAL"] == "10"
    assert dilated_settings(25.3)["OTEL_METRIC_EXPORT_INTERVAL"] == "25300"  # milliseconds stay whole
    assert dilated_settings(1000)["OTEL_BSP_SCHEDULE_DELAY"] == "600000"


def test_stretched_values_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every stretched value parses: a fractional number of milliseconds would stop the server."""
    for env_name, value in dilated_settings(27.7).items():
        monkeypatch.setenv(env_name, value)
    settings = Settings()
    assert settings.metric_export_interval_ms == 27700
