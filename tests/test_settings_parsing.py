"""Every URL-shaped and structured setting is parsed completely when the settings load, never later."""

from __future__ import annotations

from pathlib import Path

import pytest

from opskit.settings import ConfigError, load_settings
from opskit.settings.redis_url import parse_redis_url


def config_error(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> str:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    return str(info.value)


BAD_REDIS_URLS = {
    "redis+sentinel://127.0.0.1:26379": "names no master",
    "redis+sentinel://127.0.0.1:26379/": "names no master",
    "redis+sentinel://127.0.0.1:26379,127.0.0.1:x/mymaster": "port 'x'",
    "redis+sentinel://127.0.0.1:26379/my master": "master name",
    "redis+sentinel://127.0.0.1:26379/mymaster/zero": "database 'zero'",
    "redis+sentinel://127.0.0.1:26379/mymaster/0/extra": "/master/db",
    "redis+sentinel://127.0.0.1:26379/mymaster?socket_timeout=1": "no ?options",
    "redis://127.0.0.1:notaport/0": "port 'notaport'",
    "redis://127.0.0.1:70000/0": "port '70000'",
    "redis://127.0.0.1:0/0": "port '0'",
    "redis://127.0.0.1:6379/abc": "database 'abc'",
    "redis://:6379/0": "no host",
    "redis://127.0.0.1:6379/0?socket_timeout=soon": "socket_timeout",
    "redis://127.0.0.1:6379/0?no_such_option=1": "unknown URL option 'no_such_option'",
    "redis://127.0.0.1:6379/0#frag": "fragment",
    "rediss://127.0.0.1:6379/0?ssl_ca_certs=/nonexistent/ca.crt": "no such file",
    "rediss://127.0.0.1:6379/0?ssl_cert_reqs=sometimes": "Certificate Requirements",
    "redis+cluster://127.0.0.1:notaport": "port 'notaport'",
    "redis+cluster://127.0.0.1:7000/2": "only database 0",
    "rediss+cluster://:7000": "no host",
    "unix://": "unix:///path",
    "memcached://127.0.0.1:11211": "expected a URL starting with",
}


class TestRedisUrl:
    @pytest.mark.parametrize(("url", "problem"), BAD_REDIS_URLS.items(), ids=list(BAD_REDIS_URLS))
    def test_bad_url_names_variable_and_problem(self, monkeypatch: pytest.MonkeyPatch, url: str, problem: str) -> None:
        """A Redis URL that could not connect is refused at startup, naming OPSKIT_REDIS_URL and what is wrong."""
        message = config_error(monkeypatch, "OPSKIT_REDIS_URL", url)
        assert "OPSKIT_REDIS_URL=" in message
        assert problem in message

    def test_every_scheme_parses_to_its_target(self) -> None:
        """Each supported scheme yields what the backend connects to: host, port, db, TLS, nodes, master."""
        single = parse_redis_url("redis://app:s%40cret@127.0.0.1:6380/3")
        assert (single.kind, single.db, single.password, single.options["port"]) == ("single", 3, "s@cret", 6380)
        assert parse_redis_url("rediss://127.0.0.1/0?ssl_cert_reqs=none").tls
        assert parse_redis_url("unix:///run/redis.sock?db=2").options == {"path": "/run/redis.sock", "db": 2}
        cluster = parse_redis_url("rediss+cluster://127.0.0.1:7000")
        assert (cluster.kind, cluster.url, cluster.nodes, cluster.tls) == (
            "cluster",
            "rediss://127.0.0.1:7000",
            (("127.0.0.1", 7000),),
            True,
        )
        sentinel = parse_redis_url("redis+sentinel://:pw@10.0.0.1,[::1]:26380/mymaster/1")
        assert sentinel.kind == "sentinel"
        assert sentinel.nodes == (("10.0.0.1", 26379), ("::1", 26380))
        assert (sentinel.master, sentinel.db, sentinel.password) == ("mymaster", 1, "pw")

    def test_good_urls_load(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The URLs README shows are accepted as they are."""
        for url in ("redis://redis:6379/0", "redis+sentinel://h1:26379,h2:26379/mymaster", "redis+cluster://node:6379"):
            monkeypatch.setenv("OPSKIT_REDIS_URL", url)
            assert load_settings().redis_url == url


class TestAddresses:
    @pytest.mark.parametrize(
        ("value", "problem"),
        [
            ("http://collector:43l8", "port '43l8'"),
            ("http://collector:0", "port '0'"),
            ("collector:4318", "http:// or https://"),
            ("http://collector:4318/#x", "fragment"),
        ],
    )
    def test_bad_otlp_endpoint(self, monkeypatch: pytest.MonkeyPatch, value: str, problem: str) -> None:
        """An OTLP endpoint whose port or scheme is wrong names its variable."""
        for variable in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
            message = config_error(monkeypatch, variable, value)
            assert f"{variable}=" in message and problem in message
            monkeypatch.delenv(variable)

    @pytest.mark.parametrize(
        ("value", "problem"),
        [
            ("0.0.0.0:http", "port 'http'"),
            ("0.0.0.0:80000", "port '80000'"),
            ("unix:", "no socket path"),
            ("fd://x", "fd://"),
            ("::1:8000", "brackets"),
            (":8000", "HOST:PORT"),
        ],  # fmt: skip
    )
    def test_bad_bind(self, monkeypatch: pytest.MonkeyPatch, value: str, problem: str) -> None:
        """Every gunicorn bind address is checked: ports, IPv6 brackets, unix sockets, file descriptors."""
        message = config_error(monkeypatch, "BIND", value)
        assert "BIND=" in message and problem in message

    def test_good_binds(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """What gunicorn binds to is accepted."""
        monkeypatch.setenv("BIND", "0.0.0.0:8000,[::]:8001,unix:/run/app.sock,fd://3,localhost")
        assert len(load_settings().bind) == 5

    @pytest.mark.parametrize("variable", ["HOST", "OPSKIT_METRICS_HOST"])
    @pytest.mark.parametrize("value", ["0.0.0.0:8000", "[::1]", "::1::2", "app host"])
    def test_bad_host(self, monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
        """A listen address is a name or an IP, never with a port or brackets."""
        assert f"{variable}=" in config_error(monkeypatch, variable, value)

    def test_ipv6_host(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A bare IPv6 address is a host."""
        monkeypatch.setenv("HOST", "::")
        assert load_settings().host == "::"


class TestMultiprocDirectory:
    @pytest.mark.parametrize(
        ("path", "problem"),
        [
            ("/proc/opskit-metrics", "cannot be created in /proc"),
            ("/proc", "is not writable"),
            ("/etc/hostname", "is not a directory"),
            ("/etc/hostname/metrics", "/etc/hostname is not a directory"),
        ],
    )
    def test_unusable_directory(self, monkeypatch: pytest.MonkeyPatch, path: str, problem: str) -> None:
        """A directory that cannot be created or written is a configuration error naming the variable."""
        message = config_error(monkeypatch, "PROMETHEUS_MULTIPROC_DIR", path)
        assert f"PROMETHEUS_MULTIPROC_DIR={path!r}" in message and problem in message

    def test_creatable_directory_is_accepted_and_not_created(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """A directory that does not exist yet but can be made is fine; loading the settings makes nothing."""
        target = tmp_path / "a" / "b"
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(target))
        assert load_settings().prometheus_multiproc_dir == str(target)
        assert list(tmp_path.iterdir()) == []


class TestPropagators:
    @pytest.mark.parametrize(
        ("value", "problem"),
        [
            ("bogus", "'bogus' is not an installed propagator"),
            ("TraceContext", "case-sensitive"),
            ("tracecontext,", "empty name"),
            ("tracecontext,,baggage", "empty name"),
            ("bogus,none", "'bogus'"),
        ],
    )
    def test_names_the_sdk_would_refuse(self, monkeypatch: pytest.MonkeyPatch, value: str, problem: str) -> None:
        """Whatever the OpenTelemetry SDK would refuse when imported is refused here first, naming the variable."""
        message = config_error(monkeypatch, "OTEL_PROPAGATORS", value)
        assert "OTEL_PROPAGATORS=" in message and problem in message

    def test_names_the_sdk_reads(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Spaces around names are fine; `none` ends the list as it does for the SDK."""
        monkeypatch.setenv("OTEL_PROPAGATORS", " tracecontext , baggage ")
        assert load_settings().propagators == ("tracecontext", "baggage")
        monkeypatch.setenv("OTEL_PROPAGATORS", "tracecontext,NONE,bogus")
        assert load_settings().propagators == ("none",)


class TestPathLists:
    @pytest.mark.parametrize(
        "variable",
        ["OPSKIT_ACCESS_LOG_EXCLUDE_PATHS", "OPSKIT_METRICS_EXCLUDE_PATHS", "OPSKIT_RATE_LIMIT_EXEMPT_PATHS"],
    )
    @pytest.mark.parametrize("value", ["healthz", "/healthz,metrics", "/static/*.css", "*"])
    def test_pattern_that_would_never_match(self, monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
        """A path without its leading / or with a * inside would silently match nothing: refused at startup."""
        assert f"{variable}=" in config_error(monkeypatch, variable, value)
