"""Rate syntax: `limits` strings plus a burst; bad values fail at startup naming the variable."""

from __future__ import annotations

import pytest

from opskit.ratelimit import Rate, parse_rates
from opskit.settings import ConfigError, load_settings


class TestParse:
    @pytest.mark.parametrize("text", ["5/second burst=10", "5/second; burst=10", "5 per second burst = 10"])
    def test_burst_spellings(self, text: str) -> None:
        """`burst=N` after a rate, with a space or a separator, sets that rate's bucket size."""
        assert parse_rates(text) == (Rate(5, 1.0, 10),)

    def test_defaults_and_several_rates(self) -> None:
        """Without a burst the bucket holds one period's amount; items separate with , ; or |."""
        assert parse_rates("100/second, 1000/hour | 10 per 2 minutes") == (
            Rate(100, 1.0, 100),
            Rate(1000, 3600.0, 1000),
            Rate(10, 120.0, 10),
        )

    def test_describes_itself_like_slowapi(self) -> None:
        """The text in 429 bodies reads like slowapi's: `2 per 1 minute`, with the burst when it differs."""
        assert [str(r) for r in parse_rates("2/minute, 5/second burst=10, 100 per 2 hours")] == [
            "2 per 1 minute",
            "5 per 1 second (burst 10)",
            "100 per 2 hours",
        ]

    def test_window_is_the_time_to_fill_an_empty_bucket(self) -> None:
        """w of RateLimit-Policy: burst 10 at 5/s fills in 2 s."""
        assert parse_rates("5/second burst=10")[0].window == 2

    @pytest.mark.parametrize("text", ["", "lots", "burst=5", "5/second burst=0", "0/second", "5/fortnight"])
    def test_rejects_nonsense(self, text: str) -> None:
        """Anything else is a ValueError with the offending text."""
        with pytest.raises(ValueError):
            parse_rates(text)


class TestSettings:
    def test_bad_rate_names_the_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """OPSKIT_RATE_LIMIT=lots fails at startup, naming the variable."""
        monkeypatch.setenv("OPSKIT_RATE_LIMIT", "lots")
        with pytest.raises(ConfigError, match="OPSKIT_RATE_LIMIT='lots'"):
            load_settings()

    @pytest.mark.parametrize(
        ("field", "value", "var"),
        [
            ("rate_limit_key", "cookie", "OPSKIT_RATE_LIMIT_KEY"),
            ("rate_limit_exempt_networks", "10.0.0.0/8,office", "OPSKIT_RATE_LIMIT_EXEMPT_NETWORKS"),
            ("redis_url", "http://cache:6379", "OPSKIT_REDIS_URL"),
            ("rate_limit_on_error", "maybe", "OPSKIT_RATE_LIMIT_ON_ERROR"),
            ("redis_timeout", "0", "OPSKIT_REDIS_TIMEOUT"),
        ],
    )
    def test_bad_values_name_the_variable(
        self, field: str, value: str, var: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Every rate-limit knob is checked at startup."""
        monkeypatch.setenv(var, value)
        with pytest.raises(ConfigError, match=var):
            load_settings()

    def test_defaults(self) -> None:
        """Off unless set; 50 ms Redis timeout; fail-open; health and metrics exempt."""
        s = load_settings()
        assert (s.rate_limit, s.redis_url, s.redis_timeout, s.rate_limit_on_error) == ("", "", 0.05, "allow")
        assert s.rate_limit_exempt_paths == ("/healthz", "/readyz", "/metrics")
