"""The metrics settings: standard names, lists of buckets, errors naming the variable."""

from __future__ import annotations

import pytest

from opskit.settings import ConfigError, load_settings


class TestMetricsSettings:
    def test_defaults(self) -> None:
        """Zero configuration: in memory, /metrics on the app port, web latency buckets."""
        s = load_settings()
        assert s.prometheus_multiproc_dir is None
        assert (s.metrics_path, s.metrics_on_app_port, s.metrics_port) == ("/metrics", True, None)
        assert s.metrics_duration_buckets[0] == 0.005 and s.metrics_duration_buckets[-1] == 10.0

    def test_standard_directory_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """PROMETHEUS_MULTIPROC_DIR is read under its standard name; empty means none."""
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/run/prom")
        assert load_settings().prometheus_multiproc_dir == "/run/prom"
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
        assert load_settings().prometheus_multiproc_dir is None

    def test_lists_and_port_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Buckets and excluded paths are comma-separated; the metrics port is a number or empty."""
        monkeypatch.setenv("OPSKIT_METRICS_DURATION_BUCKETS", "0.01, 0.1,1")
        monkeypatch.setenv("OPSKIT_METRICS_EXCLUDE_PATHS", "/internal/*,/ping")
        monkeypatch.setenv("OPSKIT_METRICS_PORT", "9100")
        s = load_settings()
        assert s.metrics_duration_buckets == (0.01, 0.1, 1.0)
        assert s.metrics_exclude_paths == ("/internal/*", "/ping")
        assert s.metrics_port == 9100
        monkeypatch.setenv("OPSKIT_METRICS_PORT", "")
        assert load_settings().metrics_port is None

    @pytest.mark.parametrize(
        ("variable", "value"),
        [
            ("OPSKIT_METRICS_DURATION_BUCKETS", "1,0.5"),
            ("OPSKIT_METRICS_DURATION_BUCKETS", "0.1,fast"),
            ("OPSKIT_METRICS_SIZE_BUCKETS", "-1,10"),
            ("OPSKIT_METRICS_PORT", "70000"),
            ("OPSKIT_METRICS_PATH", "metrics"),
            ("OPSKIT_METRICS_IN_PROGRESS_INTERVAL", "0"),
        ],
    )
    def test_bad_values_name_the_variable(self, monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
        """A bad value fails at startup with a message naming its variable."""
        monkeypatch.setenv(variable, value)
        with pytest.raises(ConfigError, match=variable):
            load_settings()
