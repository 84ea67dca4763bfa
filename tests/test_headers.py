"""Header capture with the OpenTelemetry variables: span attributes, optionally the access line, redacted."""

from __future__ import annotations

import json
import signal

import httpx
import pytest

from opskit.fields import MAX_FIELD, REDACTED
from opskit.headers import MAX_VALUES, HeaderCapture
from tests.serving.processes import opskit_serve
from tests.tracing.receiver import otlp_receiver


@pytest.mark.slow
def test_captured_headers_reach_the_span_and_the_access_line() -> None:
    """Names and regular expressions, case-insensitive; repeated headers keep each value; sanitized and
    sensitive ones redacted; a hostile value is cut; response headers too."""
    long = "v" * 5000
    headers = [
        ("X-Client-Version", "2.1"),
        ("X-Client-Secret", "hunter2"),
        ("Authorization", "Bearer abc"),
        ("X-Custom", "a"),
        ("X-Custom", "b"),
        ("X-Long", long),
        ("X-Other", "not captured"),
    ]
    with otlp_receiver() as receiver:
        env = {
            "WEB_CONCURRENCY": "1",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "X-Client-.*,authorization,x-custom,x-long",
            "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE": "content-type",
            "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS": ".*-secret",
            "OPSKIT_ACCESS_LOG_CAPTURED_HEADERS": "true",
        }
        with opskit_serve("tests.apps.annotated:app", env) as (process, port):
            httpx.get(f"http://127.0.0.1:{port}/items/1", headers=headers, timeout=10).raise_for_status()
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0, process.stderr()
            lines = [json.loads(line) for line in process.stdout().split("\n") if line]
        (span,) = [s for s in receiver.spans() if s.attributes.get("http.route") == "/items/{item_id}"]

    expected = {
        "x-client-version": ("2.1",),
        "x-client-secret": (REDACTED,),
        "authorization": (REDACTED,),
        "x-custom": ("a", "b"),
        "x-long": (long[:MAX_FIELD],),
    }
    prefix = "http.request.header."
    captured = {k[len(prefix) :]: v for k, v in span.attributes.items() if k.startswith(prefix)}
    assert captured == expected
    assert span.attributes["http.response.header.content-type"] == ("application/json",)
    (line,) = [x for x in lines if x.get("logger") == "opskit.access"]
    assert line["request_headers"] == {name: list(v) for name, v in expected.items()}
    assert line["response_headers"] == {"content-type": ["application/json"]}


class TestHeaderCapture:
    def test_nothing_is_captured_unless_asked(self) -> None:
        """No patterns: no header is picked."""
        capture = HeaderCapture((), (), (), ())
        assert not capture.requests and not capture.responses
        assert capture.pick([(b"x-a", b"1")]) == {}

    def test_patterns_match_whole_names_and_values_are_bounded_in_number(self) -> None:
        """``x-a`` does not capture ``x-ab``; a header repeated 100 times keeps 16 values."""
        capture = HeaderCapture(("x-a",), (), (), ())
        assert capture.pick([(b"x-ab", b"1"), *[(b"X-A", b"%d" % n) for n in range(100)]]) == {
            "x-a": tuple(str(n) for n in range(MAX_VALUES))
        }
