"""``http_response_first_byte_seconds``: streamed responses are timed to their first body part too."""

from __future__ import annotations

import signal

import httpx
import pytest

from tests.metrics.parsing import parse_text
from tests.serving.processes import opskit_serve


@pytest.mark.slow
def test_a_streamed_response_is_timed_to_its_first_part() -> None:
    """A body sent in two parts with a pause between: one observation, before the end of the body; a
    response sent whole has none."""
    with opskit_serve("tests.apps.frameworks:fastapi_app", {"WEB_CONCURRENCY": "1"}) as (process, port):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert client.get("/stream").text == "first second"
            client.get("/items/1").raise_for_status()
            metrics = client.get("/metrics").text
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, process.stderr()

    found = {(s.name, s.labels.get("route")): s.value for f in parse_text(metrics) for s in f.samples}
    assert found[("http_response_first_byte_seconds_count", "/stream")] == 1
    assert ("http_response_first_byte_seconds_count", "/items/{item_id}") not in found
    first = found[("http_response_first_byte_seconds_sum", "/stream")]
    assert 0 < first < found[("http_request_duration_seconds_sum", "/stream")]
