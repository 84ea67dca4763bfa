"""Over real HTTP: 2 uvicorn "pods" x 2 workers share one Redis bucket per API key."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import orjson
import pytest

from tests.servers import Background, RedisServer, listening_socket, wait_for_port

RATE = 20
BURST = 10


@pytest.fixture
def pods(redis: RedisServer) -> Iterator[list[tuple[str, Background]]]:
    """Two uvicorn servers of two workers each, limited by OPSKIT_RATE_LIMIT through one Redis."""
    env = {
        "OPSKIT_RATE_LIMIT": f"{RATE}/second burst={BURST}",
        "OPSKIT_RATE_LIMIT_KEY": "header:X-API-Key",
        "OPSKIT_REDIS_URL": redis.url,
        "OPSKIT_REDIS_TIMEOUT": "0.5",
        "PYTHONUNBUFFERED": "1",
    }
    started: list[tuple[str, Background]] = []
    try:
        for _ in range(2):
            sock = listening_socket()
            port = sock.getsockname()[1]
            argv = [
                sys.executable,
                "-m",
                "uvicorn",
                "tests.ratelimit.apps:served",
                "--factory",
                "--fd",
                str(sock.fileno()),
            ]
            started.append(
                (f"http://127.0.0.1:{port}", Background([*argv, "--workers", "2"], env=env, pass_fds=[sock.fileno()]))
            )
            sock.close()
            wait_for_port(port)
        yield started
    finally:
        for _, proc in started:
            proc.close()


@pytest.mark.slow
class TestServedPods:
    def test_pods_share_the_bucket_exactly(self, pods: list[tuple[str, Background]]) -> None:
        """Requests spread over 2 pods x 2 workers are admitted as one bucket allows; 429s are complete and
        logged with their policy."""
        bases = [base for base, _ in pods]
        for base in bases:  # both pods answer before the clock starts (their workers may still be booting)
            httpx.get(base + "/healthz", timeout=30)
        first = time.time()

        def hammer(base: str) -> list[tuple[float, httpx.Response, float]]:
            got = []
            with httpx.Client(base_url=base) as c:
                while time.time() - first < 2.0:
                    sent = time.time()
                    got.append((sent, c.get("/items/1", headers={"x-api-key": "tenant-1"}), time.time()))
            return got

        with ThreadPoolExecutor(4) as pool:
            timed = [r for rs in pool.map(hammer, bases * 2) for r in rs]
        responses = [r for _, r, _ in timed]
        codes = [r.status_code for r in responses]
        # Redis decided each request between its send and its answer: bound the bucket's lifetime both ways.
        outer = max(done for _, _, done in timed) - min(sent for sent, _, _ in timed)
        inner = max(sent for sent, _, _ in timed) - min(done for _, _, done in timed)
        refused = next((r for r in responses if r.status_code == 429), None)
        assert set(codes) == {200, 429}
        assert 0.98 * (BURST + RATE * inner) <= codes.count(200) <= BURST + RATE * outer + 1
        assert refused is not None
        assert refused.json()["detail"].startswith("Rate limit exceeded")
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["ratelimit-policy"] == '"global";q=10;w=1'
        lines = []
        for _, proc in pods:
            proc.stop()
            lines += [orjson.loads(line) for line in proc.stdout().splitlines() if line.startswith("{")]
        logged = [line for line in lines if line.get("event") == "request" and line.get("status") == 429]
        assert logged and all(line["ratelimit_policy"] == "global" for line in logged)
        assert not any("per-process" in line.get("event", "") for line in lines)
