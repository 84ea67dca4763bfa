"""The exposition formats, checked by the real promtool and prometheus_client's parsers."""

from __future__ import annotations

import gzip
import subprocess

import pytest

from opskit.metrics import Registry
from opskit.metrics.exposition import accepts_gzip, encode_body, render, wants_openmetrics
from tests.metrics.parsing import parse_openmetrics, parse_text
from tests.servers import which

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


@pytest.fixture
def registry() -> Registry:
    r = Registry(None)
    c = r.counter("http_requests_total", "HTTP requests.", ["method", "route", "status"])
    c.labels("GET", "/items/{item_id}", "200").inc(3, trace_id=TRACE)
    c.labels("GET", 'odd "route"\\\n', "404").inc()
    h = r.histogram("http_request_duration_seconds", "Request duration.", ["route"], buckets=(0.1, 1.0))
    h.labels("/items/{item_id}").observe(0.05, trace_id=TRACE)
    h.labels("/items/{item_id}").observe(2.0)
    r.gauge("opskit_build_info", "Build.", ["version", "service"], mode="max").labels("1.2.3", "svc").set(1)
    r.gauge("idle_gauge", "Never set.")
    r.counter("quiet_total", "No labels, never incremented.")
    return r


def promtool(text: bytes) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [which("promtool"), "check", "metrics"], input=text.decode(), capture_output=True, text=True, timeout=30
    )


class TestText:
    def test_promtool_accepts_it_without_warnings(self, registry: Registry) -> None:
        """`promtool check metrics` finds no problem (names, units, help, types)."""
        result = promtool(render(registry.collect(), openmetrics=False))
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip() == "" and result.stderr.strip() == ""

    def test_promtool_would_catch_a_bad_exposition(self) -> None:
        """The check above can fail: promtool rejects a counter without _total."""
        result = promtool(b"# HELP requests Requests.\n# TYPE requests counter\nrequests 1\n")
        assert result.returncode != 0 or "total" in result.stdout + result.stderr

    def test_prometheus_client_parses_the_values(self, registry: Registry) -> None:
        """The classic parser reads back every value, escaped label values included."""
        families = {f.name: f for f in parse_text(render(registry.collect(), openmetrics=False).decode())}
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in families["http_requests"].samples}
        assert samples[("http_requests_total", (("method", "GET"), ("route", "/items/{item_id}"), ("status", "200")))]
        odd = [s for s in families["http_requests"].samples if s.labels["route"].startswith("odd")]
        assert odd[0].labels["route"] == 'odd "route"\\\n'
        hist = {(s.name, s.labels.get("le")): s.value for s in families["http_request_duration_seconds"].samples}
        assert hist[("http_request_duration_seconds_bucket", "0.1")] == 1.0
        assert hist[("http_request_duration_seconds_bucket", "+Inf")] == 2.0
        assert hist[("http_request_duration_seconds_count", None)] == 2.0
        assert hist[("http_request_duration_seconds_sum", None)] == 2.05
        assert [s.value for s in families["quiet"].samples] == [0.0]
        assert families["idle_gauge"].samples == []


class TestOpenMetrics:
    def test_parses_with_exemplars_and_eof(self, registry: Registry) -> None:
        """The OpenMetrics parser accepts it (it requires # EOF) and finds the trace exemplars."""
        text = render(registry.collect(), openmetrics=True).decode()
        assert text.endswith("# EOF\n")
        families = {f.name: f for f in parse_openmetrics(text)}
        total = [s for s in families["http_requests"].samples if s.labels.get("status") == "200"]
        assert total[0].name == "http_requests_total" and total[0].value == 3.0
        assert total[0].exemplar is not None and total[0].exemplar.labels == {"trace_id": TRACE}
        buckets = [s for s in families["http_request_duration_seconds"].samples if s.name.endswith("_bucket")]
        with_exemplar = [(s.labels["le"], s.exemplar.value) for s in buckets if s.exemplar is not None]
        assert with_exemplar == [("0.1", 0.05)]


class TestNegotiation:
    @pytest.mark.parametrize(
        ("accept", "expected"),
        [
            (PROMETHEUS_ACCEPT, True),
            ("application/openmetrics-text; version=1.0.0", True),
            ("application/openmetrics-text;q=0", False),
            ("text/plain", False),
            ("", False),
            ("*/*", False),
        ],
    )
    def test_openmetrics_only_when_asked(self, accept: str, expected: bool) -> None:
        """OpenMetrics when the Accept header lists it with q > 0; the classic format otherwise."""
        assert wants_openmetrics(accept) is expected

    @pytest.mark.parametrize(
        ("header", "expected"),
        [("gzip, deflate", True), ("br;q=1, gzip;q=0.5", True), ("gzip;q=0", False), ("", False)],
    )
    def test_gzip_when_accepted(self, header: str, expected: bool) -> None:
        """gzip is used when Accept-Encoding allows it."""
        assert accepts_gzip(header) is expected

    def test_gzip_body_round_trips(self, registry: Registry) -> None:
        """The compressed body decompresses to the exposition."""
        body = render(registry.collect(), openmetrics=False)
        assert gzip.decompress(encode_body(body, True)) == body
