"""slowapi users: the same decorators on opskit's bucket, and slowapi's own Limiter next to opskit."""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from starlette.testclient import TestClient

import opskit
from tests.conftest import LogReader
from tests.ratelimit.conftest import sample
from tests.servers import RedisServer


def migrated_app() -> FastAPI:
    """A slowapi app whose only change is the import lines."""
    from opskit.ratelimit.slowapi import Limiter, _rate_limit_exceeded_handler
    from opskit.ratelimit.slowapi.errors import RateLimitExceeded
    from opskit.ratelimit.slowapi.util import get_remote_address

    limiter = Limiter(key_func=get_remote_address, headers_enabled=True)
    app = FastAPI()
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)

    @app.get("/home")
    @limiter.limit("2/minute")
    async def home(request: Request, response: Response) -> dict[str, str]:
        return {"home": "ok"}

    @app.get("/sync")
    @limiter.limit("1/minute")
    def sync(request: Request) -> dict[str, str]:
        return {"sync": "ok"}

    @app.get("/a")
    @limiter.shared_limit("2/minute", scope="shared")
    async def a(request: Request) -> dict[str, str]:
        return {}

    @app.get("/b")
    @limiter.shared_limit("2/minute", scope="shared")
    async def b(request: Request) -> dict[str, str]:
        return {}

    @app.api_route("/write", methods=["GET", "POST"])
    @limiter.limit(lambda: "1/minute", methods=["POST"], cost=lambda request: 1)
    async def write(request: Request) -> dict[str, str]:
        return {}

    @app.api_route("/each", methods=["GET", "POST"])
    @limiter.limit("1/minute", per_method=True)
    async def each(request: Request) -> dict[str, str]:
        return {}

    @app.get("/bare")
    @limiter.limit("3/minute")
    async def bare(request: Request) -> dict[str, str]:
        return {}

    opskit.instrument(app)
    return app


def slowapi_app() -> FastAPI:
    """An app that keeps slowapi's own Limiter (in-memory storage) and adds opskit."""
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.util import get_remote_address

    limiter = Limiter(key_func=get_remote_address)
    app = FastAPI()
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]

    @app.get("/home")
    @limiter.limit("1/minute")
    async def home(request: Request) -> dict[str, str]:
        return {"home": "ok"}

    opskit.instrument(app)
    return app


class TestMigratedApp:
    def test_decorator_limits_on_opskit_bucket(self, log_lines: LogReader) -> None:
        """`@limiter.limit("2/minute")` from opskit: 2 pass, the 3rd is slowapi's 429 with its headers; the access
        log names the endpoint's policy and the decision is counted."""

        def limited() -> float:
            labels = {"policy": "tests.ratelimit.test_slowapi.home", "decision": "limited"}
            return sample(None, "opskit_ratelimit_decisions_total", **labels)

        before = limited()
        with TestClient(migrated_app()) as c:
            log_lines()
            got = [c.get("/home") for _ in range(3)]
            lines = [line for line in log_lines() if line.get("event") == "request"]
        assert [r.status_code for r in got] == [200, 200, 429]
        assert got[0].json() == {"home": "ok"}
        assert (got[0].headers["x-ratelimit-limit"], got[0].headers["x-ratelimit-remaining"]) == ("2", "1")
        assert got[0].headers["retry-after"] == "30"
        assert got[2].json() == {"error": "Rate limit exceeded: 2 per 1 minute"}
        assert got[2].headers["retry-after"] == "30"
        assert got[2].headers["x-ratelimit-remaining"] == "0"
        assert lines[-1]["ratelimit_policy"] == "tests.ratelimit.test_slowapi.home"
        assert limited() == before + 1

    def test_sync_endpoints_and_shared_limits(self) -> None:
        """Sync endpoints run in the thread pool as before; shared_limit spans its routes."""
        with TestClient(migrated_app()) as c:
            assert [c.get("/sync").status_code for _ in range(2)] == [200, 429]
            assert [c.get(p).status_code for p in ("/a", "/b", "/a")] == [200, 200, 429]

    def test_methods_per_method_and_callables(self) -> None:
        """`methods` limits only those methods; `per_method` gives each its bucket; callables are read per request."""
        with TestClient(migrated_app()) as c:
            assert [c.get("/write").status_code for _ in range(3)] == [200] * 3
            assert [c.post("/write").status_code for _ in range(2)] == [200, 429]
            assert [c.get("/each").status_code for _ in range(2)] == [200, 429]
            assert c.post("/each").status_code == 200

    def test_headers_without_a_response_parameter(self) -> None:
        """With headers_enabled and an endpoint returning a dict without `response: Response` (slowapi answers
        500 there), opskit's middleware adds the headers."""
        with TestClient(migrated_app()) as c:
            r = c.get("/bare")
        assert r.status_code == 200
        assert r.headers["x-ratelimit-limit"] == "3"

    def test_storage_uri_gets_its_own_limiter_closed_at_shutdown(self, redis: RedisServer) -> None:
        """`storage_uri` naming a Redis other than OPSKIT_REDIS_URL decides there, and closes with the app."""
        from opskit.ratelimit.slowapi import Limiter

        limiter = Limiter(storage_uri=redis.url)
        app = FastAPI()

        @app.get("/")
        @limiter.limit("1/minute")
        async def root(request: Request) -> dict[str, str]:
            return {}

        opskit.instrument(app)
        with TestClient(app) as c:
            assert [c.get("/").status_code for _ in range(2)] == [200, 429]
            clients = int(redis.cli("INFO", "clients").split("connected_clients:")[1].split()[0])
        assert redis.cli("--scan").strip()
        assert clients >= 2  # this test's redis-cli, and the limiter's connection
        remaining = int(redis.cli("INFO", "clients").split("connected_clients:")[1].split()[0])
        assert remaining == 1  # only redis-cli: the limiter closed at shutdown


class TestSlowapiAlongside:
    def test_slowapi_429s_show_in_opskit_logs_and_metrics(self, log_lines: LogReader) -> None:
        """slowapi's own 429 reaches the client unchanged, is logged by opskit as policy `external` and counted."""

        def external() -> float:
            labels = {"policy": "external", "decision": "limited"}
            return sample(None, "opskit_ratelimit_decisions_total", **labels)

        before = external()
        with TestClient(slowapi_app()) as c:
            log_lines()
            got = [c.get("/home").status_code for _ in range(2)]
            lines = [line for line in log_lines() if line.get("event") == "request"]
        assert got == [200, 429]
        assert [(line["status"], line.get("ratelimit_policy")) for line in lines] == [(200, None), (429, "external")]
        assert external() == before + 1
