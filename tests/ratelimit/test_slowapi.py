"""slowapi users: the same decorators on opskit's bucket, and slowapi's own Limiter next to opskit."""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from starlette.testclient import TestClient

import opskit
from tests.conftest import LogReader
from tests.ratelimit.conftest import sample


def migrated_app() -> FastAPI:
    """A slowapi app whose only change is the import line."""
    from opskit.ratelimit.slowapi import Limiter, RateLimitExceeded, _rate_limit_exceeded_handler, get_remote_address

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
    def test_decorator_limits_on_opskit_bucket(self) -> None:
        """`@limiter.limit("2/minute")` from opskit: 2 pass, the 3rd is 429 {"detail"}; headers on allowed ones."""
        with TestClient(migrated_app()) as c:
            got = [c.get("/home") for _ in range(3)]
        assert [r.status_code for r in got] == [200, 200, 429]
        assert got[0].json() == {"home": "ok"}
        assert got[0].headers["ratelimit"] == '"tests.ratelimit.test_slowapi.home";r=1;t=30'
        assert got[2].json() == {"detail": "Rate limit exceeded: 2 per 1 minute"}
        assert got[2].headers["retry-after"] == "30"

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
