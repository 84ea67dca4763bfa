"""The settings object: defaults, environment variables, overrides and error messages."""

from __future__ import annotations

import pytest

from opskit.settings import ConfigError, env_name, env_vars, load_settings


class TestEnvironment:
    def test_defaults_need_no_environment(self) -> None:
        """With nothing set, every feature has a working default."""
        s = load_settings()
        assert s.log_level == "info"
        assert s.trusted_proxies == ()
        assert s.request_id_header == "X-Request-ID"

    def test_standard_names_are_read(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """OTEL_SERVICE_NAME and LOG_LEVEL set the same knobs as their OPSKIT_ names."""
        monkeypatch.setenv("OTEL_SERVICE_NAME", "checkout")
        monkeypatch.setenv("LOG_LEVEL", "debug")
        s = load_settings()
        assert s.service_name == "checkout"
        assert s.log_level == "debug"

    def test_lists_are_comma_separated(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """List knobs take `a,b` from the environment."""
        monkeypatch.setenv("OPSKIT_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1")
        assert load_settings().trusted_proxies == ("10.0.0.0/8", "127.0.0.1")

    def test_overrides_win(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Keyword overrides beat the environment."""
        monkeypatch.setenv("OPSKIT_LOG_LEVEL", "debug")
        assert load_settings(log_level="error").log_level == "error"
        assert load_settings(load_settings(), log_format="console").log_format == "console"


class TestErrors:
    def test_bad_literal_names_variable_and_choices(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A bad enumerated value names the variable and lists what is accepted."""
        monkeypatch.setenv("OPSKIT_LOG_LEVEL", "loud")
        with pytest.raises(ConfigError) as info:
            load_settings()
        assert "OPSKIT_LOG_LEVEL='loud'" in str(info.value)
        assert "'debug'" in str(info.value)

    def test_bad_cidr_names_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A trusted proxy that is no network fails at startup."""
        monkeypatch.setenv("OPSKIT_TRUSTED_PROXIES", "10.0.0.0/8,proxy.local")
        with pytest.raises(ConfigError, match="OPSKIT_TRUSTED_PROXIES"):
            load_settings()

    def test_bad_override_names_variable(self) -> None:
        """Overrides given in code are checked like the environment."""
        with pytest.raises(ConfigError, match="OPSKIT_REQUEST_ID_MAX_LENGTH"):
            load_settings(request_id_max_length=2)


def test_every_field_has_an_environment_variable() -> None:
    """Each field maps to exactly one primary variable, and env_vars() lists it."""
    names = env_vars()
    from opskit.settings import Settings

    for field in Settings.model_fields:
        assert env_name(field) in names


def test_section_validators_do_not_shadow_each_other() -> None:
    """Sections are joined by inheritance, so a validator name reused in two sections would
    silently replace the other one: every validator name must be unique."""
    from opskit.settings import Settings
    from opskit.settings._base import SettingsSection

    seen: dict[str, str] = {}
    for cls in Settings.__mro__:
        if not (isinstance(cls, type) and issubclass(cls, SettingsSection)) or cls in (Settings, SettingsSection):
            continue
        for name in cls.__dict__["__pydantic_decorators__"].field_validators:
            assert name not in seen, f"{cls.__name__}.{name} shadows {seen[name]}.{name}"
            seen[name] = cls.__name__


def test_error_names_the_variable_that_was_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """With several names for one knob, the message names the one the user set."""
    monkeypatch.setenv("LOG_LEVEL", "verbose")
    with pytest.raises(ConfigError, match="LOG_LEVEL='verbose'") as info:
        load_settings()
    assert "OPSKIT_LOG_LEVEL" not in str(info.value)


class TestSignalSettings:
    """Extra labels, header capture and sampling fail at startup naming the variable."""

    @pytest.mark.parametrize(
        ("value", "why"),
        [
            ("tenant,tenant", "taken"),
            ("route", "taken"),
            ("__x", "not a label"),
            ("header:", "header"),
            ("a-b", "label"),
        ],
    )
    def test_bad_metric_labels_are_refused(self, monkeypatch: pytest.MonkeyPatch, value: str, why: str) -> None:
        """A label that is not a Prometheus name, repeats, or replaces one opskit sets."""
        monkeypatch.setenv("OPSKIT_METRICS_LABELS", value)
        with pytest.raises(ConfigError, match=f"OPSKIT_METRICS_LABELS=.*{why}"):
            load_settings()

    def test_header_labels_are_named_in_snake_case(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """``header:X-Client-Version`` is accepted beside an annotated field."""
        monkeypatch.setenv("OPSKIT_METRICS_LABELS", "tenant, header:X-Client-Version")
        assert load_settings().metrics_labels == ("tenant", "header:X-Client-Version")

    def test_capture_variables_are_the_opentelemetry_ones(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The standard names set the fields; a pattern that is no regular expression is refused."""
        monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", "x-a, X-B.*")
        assert load_settings().capture_headers_server_request == ("x-a", "X-B.*")
        monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS", "x-(")
        with pytest.raises(ConfigError, match="OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS"):
            load_settings()

    def test_a_share_outside_zero_to_one_is_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """OPSKIT_ACCESS_LOG_SAMPLE is a share."""
        monkeypatch.setenv("OPSKIT_ACCESS_LOG_SAMPLE", "1.5")
        with pytest.raises(ConfigError, match="OPSKIT_ACCESS_LOG_SAMPLE"):
            load_settings()
