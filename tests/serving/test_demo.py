"""`make demo`: the example service on 2 workers answers on every URL it prints."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.servers import ROOT, Background, free_port, wait_for_port
from tests.serving.processes import children, wait_until

pytestmark = pytest.mark.slow

METRICS_INSTALLED = importlib.util.find_spec("opskit.metrics") is not None


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


class TestMakeDemo:
    def test_serves_the_printed_urls(self, tmp_path: Path) -> None:
        """`make demo` prints its URLs, runs 2 workers, and each URL answers; SIGTERM stops it cleanly."""
        make = shutil.which("make")
        assert make is not None
        port = free_port()
        process = Background([make, "-s", "demo", f"DEMO_PORT={port}"], cwd=ROOT, env={"TMPDIR": str(tmp_path)})
        try:
            wait_for_port(port, timeout=60)
            printed = re.findall(r"^\s+(\w+)\s+(http://\S+)$", process.stdout(), re.MULTILINE)
            urls = dict(printed)
            assert set(urls) == {"API", "docs", "metrics", "healthz", "readyz"}
            for name, url in urls.items():
                status, _ = fetch(url)
                # /metrics comes with the metrics feature; until it is installed the path is unserved.
                expected = 200 if name != "metrics" or METRICS_INSTALLED else 404
                assert status == expected, url
            assert json.loads(fetch(urls["API"])[1]) == {"name": "kettle", "id": 1}
            gunicorn = list(children(process.pid))
            assert len(gunicorn) == 1
            wait_until(lambda: len(children(gunicorn[0])) == 2, what="2 demo workers")
            status, _ = fetch(urls["API"].replace("/items/1", "/error"))
            assert status == 500
            # The loop the demo documents: a burst of 5 per client, then 2 per second. Without Redis the
            # 2 workers share their buckets, so 8 quick requests (each on a new connection) see 429s.
            statuses = [fetch(urls["API"].replace("/items/1", "/limited"))[0] for _ in range(8)]
            assert statuses[:5] == [200] * 5 and 429 in statuses[5:]
            os.kill(gunicorn[0], signal.SIGTERM)  # as a container runtime would; make then exits with it
            assert process.wait(30) == 0
        finally:
            process.close()
