"""A real Prometheus server for the metrics tests: scrapes one target every second."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.servers import Background, free_port, which


class Prometheus:
    def __init__(self, tmp: Path, target: str) -> None:
        self.port = free_port()
        config = tmp / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: opskit\n"
            "    scrape_interval: 1s\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        self.proc = Background(
            [
                which("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--enable-feature=exemplar-storage",
            ]
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def api(self, path: str, **params: Any) -> Any:
        with httpx.Client(base_url=self.url, timeout=10) as c:
            r = c.get(f"/api/v1/{path}", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "success"
        return body["data"]

    def until(self, what: str, check: Any, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            got = check()
            if got:
                return got
            if time.monotonic() > deadline:
                raise TimeoutError(f"Prometheus never showed {what}; it logged: {self.proc.stderr()[-3000:]}")
            time.sleep(0.25)
