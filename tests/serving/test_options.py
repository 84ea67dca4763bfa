"""gunicorn options derived from opskit's settings."""

from __future__ import annotations

import pytest

from opskit.runtime import Runtime
from opskit.serving.options import WORKER_CLASS, bind_addresses, forwarded_allow_ips, gunicorn_options
from opskit.settings import ConfigError, load_settings


class TestBind:
    def test_host_and_port(self) -> None:
        """HOST and PORT make one address; IPv6 hosts get brackets."""
        assert bind_addresses(load_settings(host="127.0.0.1", port=9000)) == ["127.0.0.1:9000"]
        assert bind_addresses(load_settings(host="::", port=9000)) == ["[::]:9000"]

    def test_bind_wins(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """BIND (comma-separated) replaces HOST/PORT."""
        monkeypatch.setenv("BIND", "127.0.0.1:1,unix:/tmp/app.sock")
        monkeypatch.setenv("PORT", "2")
        assert bind_addresses(load_settings()) == ["127.0.0.1:1", "unix:/tmp/app.sock"]


class TestProxies:
    def test_trust_nobody_by_default(self) -> None:
        """Unlike gunicorn's 127.0.0.1 default, no peer's forwarded headers are applied."""
        settings = load_settings()
        assert forwarded_allow_ips(settings) == []
        assert gunicorn_options(Runtime(settings))["forwarded_allow_ips"] == ""

    def test_follows_trusted_proxies(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Unset FORWARDED_ALLOW_IPS follows OPSKIT_TRUSTED_PROXIES; set, it wins."""
        monkeypatch.setenv("OPSKIT_TRUSTED_PROXIES", "10.0.0.0/8")
        assert forwarded_allow_ips(load_settings()) == ["10.0.0.0/8"]
        monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
        assert forwarded_allow_ips(load_settings()) == ["*"]

    def test_bad_address_names_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A forwarded-allow entry that is no address fails naming FORWARDED_ALLOW_IPS."""
        monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.0/8,lb.internal")
        with pytest.raises(ConfigError, match="FORWARDED_ALLOW_IPS=.*lb.internal"):
            load_settings()


class TestOptions:
    def test_env_names_reach_gunicorn(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The standard variables set gunicorn's settings; opskit's worker and logger classes are used."""
        for name, value in {
            "WEB_CONCURRENCY": "5",
            "TIMEOUT": "11",
            "GRACEFUL_TIMEOUT": "12",
            "KEEP_ALIVE": "13",
            "MAX_REQUESTS": "1000",
            "MAX_REQUESTS_JITTER": "50",
            "LOG_LEVEL": "warning",
        }.items():
            monkeypatch.setenv(name, value)
        options = gunicorn_options(Runtime(load_settings()))
        assert (options["workers"], options["timeout"], options["graceful_timeout"], options["keepalive"]) == (
            5,
            11,
            12,
            13,
        )
        assert (options["max_requests"], options["max_requests_jitter"], options["loglevel"]) == (1000, 50, "warning")
        assert options["worker_class"] == WORKER_CLASS
        assert options["accesslog"] is None
        assert options["control_socket_disable"] is True


class TestShutdownDelay:
    def test_must_fit_in_graceful_timeout(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A shutdown delay that leaves no time to drain is rejected, naming the variable."""
        monkeypatch.setenv("GRACEFUL_TIMEOUT", "10")
        monkeypatch.setenv("OPSKIT_SHUTDOWN_DELAY", "10")
        with pytest.raises(ConfigError, match="OPSKIT_SHUTDOWN_DELAY=.*GRACEFUL_TIMEOUT"):
            load_settings()
        monkeypatch.setenv("OPSKIT_SHUTDOWN_DELAY", "5")
        assert load_settings().shutdown_delay == 5
