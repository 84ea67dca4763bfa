"""The concurrency cap under a real server (`opskit serve`, one gunicorn worker)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.metrics.parsing import parse_text
from tests.serving.processes import opskit_serve, wait_until

pytestmark = pytest.mark.slow

APP = "tests.overload.app:app"


def sample(url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in parse_text(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return 0.0


class TestConcurrencyCap:
    def test_cap_of_ten_serves_ten_of_forty_and_sheds_the_rest(self, tmp_path: Path) -> None:
        """40 concurrent slow requests at a cap of 10: 10 are served, 30 get 503 with Retry-After and are
        counted; the probes and /metrics answer 200 while the worker is full."""
        hold = tmp_path / "release"
        env = {"WEB_CONCURRENCY": "1", "OPSKIT_MAX_IN_FLIGHT": "10", "HOLD_FILE": str(hold)}
        with opskit_serve(APP, env) as (_process, port):
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: httpx.get(f"{url}/readyz", timeout=5).status_code == 200, what="readiness")
            limits = httpx.Limits(max_connections=50, max_keepalive_connections=0)
            with httpx.Client(base_url=url, timeout=60, limits=limits) as client, ThreadPoolExecutor(40) as pool:
                futures = [pool.submit(client.get, "/held") for _ in range(40)]
                wait_until(lambda: sum(f.done() for f in futures) == 30, timeout=30, what="30 answers")
                shed = [f.result() for f in futures if f.done()]
                assert {r.status_code for r in shed} == {503}
                assert all(r.headers["retry-after"] == "1" for r in shed)
                # The worker is still full (10 held): probes and metrics are never shed.
                for path in ("/healthz", "/readyz", "/metrics"):
                    assert httpx.get(f"{url}{path}", timeout=10).status_code == 200, path
                assert sample(url, "opskit_requests_shed_total", reason="max_in_flight") == 30
                wait_until(lambda: sample(url, "opskit_in_flight_requests") == 10, what="in-flight gauge")
                assert sample(url, "opskit_in_flight_limit") == 10
                # Averaged over about a second: it climbs towards 1 while the worker stays full.
                wait_until(lambda: sample(url, "opskit_saturation") > 0.5, what="saturation")
                assert client.get("/fast").status_code == 503  # any route, not only the slow one
                hold.touch()
                served = [f.result() for f in futures if f.result().status_code != 503]
            assert [r.status_code for r in served] == [200] * 10
            assert sample(url, "opskit_requests_shed_total", reason="max_in_flight") == 31
            assert httpx.get(f"{url}/fast", timeout=10).status_code == 200
            for path in ("/healthz", "/readyz"):
                assert httpx.get(f"{url}{path}", timeout=10).status_code == 200, path
