"""A real Prometheus server for the tests: started on a free port, fed a config, queried over HTTP."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.servers import Background, free_port, wait_for_port, which

T = TypeVar("T")


class QueryError(Exception):
    """Prometheus rejected a query (bad syntax, unknown function...)."""


class PrometheusServer:
    """``prometheus`` with a private TSDB, scraping ``targets`` (host:port) and loading ``rule_files``."""

    def __init__(
        self,
        *,
        targets: Sequence[str] = (),
        target_labels: dict[str, str] | None = None,
        rule_files: Sequence[Path] = (),
        scrape_interval: str = "1s",
    ) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="opskit-prometheus-"))
        config: dict[str, Any] = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [],
        }
        if targets:
            config["scrape_configs"].append(
                {
                    "job_name": "opskit",
                    "static_configs": [{"targets": list(targets), "labels": dict(target_labels or {})}],
                }
            )
        config_file = self.dir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        self.process = Background(
            [
                which("prometheus"),
                f"--config.file={config_file}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--enable-feature=exemplar-storage",
                "--log.level=warn",
            ]
        )
        try:
            wait_for_port(self.port, timeout=30)
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline or self.process.proc.poll() is not None:
                raise RuntimeError(f"prometheus did not become ready: {self.process.stderr()[-2000:]}")
            time.sleep(0.1)

    def _get(self, path: str, params: dict[str, str]) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            with exc:
                body = json.load(exc)
            raise QueryError(f"{body.get('errorType')}: {body.get('error')}") from None
        if body.get("status") != "success":
            raise QueryError(str(body))
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Evaluate ``expr`` now; the result's samples (an empty list when nothing matches)."""
        data = self._get("/api/v1/query", {"query": expr})
        result = data["result"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return list(result)

    def series(self, match: str) -> list[dict[str, str]]:
        """The series a selector matches over the last hour."""
        start = str(time.time() - 3600)
        return list(self._get("/api/v1/series", {"match[]": match, "start": start}))

    def rule_groups(self) -> list[dict[str, Any]]:
        """The loaded rule groups, with each rule's health and last error."""
        return list(self._get("/api/v1/rules", {})["groups"])

    def exemplars(self, selector: str) -> list[dict[str, Any]]:
        """The exemplars stored for ``selector`` over the last ten minutes."""
        now = time.time()
        data = self._get("/api/v1/query_exemplars", {"query": selector, "start": str(now - 600), "end": str(now + 60)})
        return [exemplar for group in data for exemplar in group["exemplars"]]

    def until(self, what: str, check: Callable[[], T], timeout: float = 30.0) -> T:
        """Poll ``check`` until it returns something truthy, and return that."""
        deadline = time.monotonic() + timeout
        while True:
            got = check()
            if got:
                return got
            if time.monotonic() > deadline:
                raise TimeoutError(f"Prometheus never showed {what}; it logged: {self.process.stderr()[-3000:]}")
            time.sleep(0.25)

    def wait_for(self, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll ``expr`` until it returns samples."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expr} returned nothing after {timeout}s")
            time.sleep(0.25)

    def close(self) -> None:
        self.process.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def prometheus_server(
    *,
    targets: Sequence[str] = (),
    target_labels: dict[str, str] | None = None,
    rule_files: Sequence[Path] = (),
    scrape_interval: str = "1s",
) -> Iterator[PrometheusServer]:
    """A :class:`PrometheusServer`, stopped on exit."""
    server = PrometheusServer(
        targets=targets, target_labels=target_labels, rule_files=rule_files, scrape_interval=scrape_interval
    )
    try:
        yield server
    finally:
        server.close()
