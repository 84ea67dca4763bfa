# The examples decorate with a Limiter chosen at run time (slowapi or the shim), typed Any here.
# mypy: disable-error-code="untyped-decorator"
"""slowapi's documented examples, run unchanged on slowapi itself and on opskit's shim: same answers.

Each example is written once against a module set (``slowapi`` or ``opskit.ratelimit.slowapi``) and
driven with the same requests; status codes, bodies, the set of rate-limit headers and the values of
``X-RateLimit-Limit`` / ``-Remaining`` must agree. ``X-RateLimit-Reset`` and ``Retry-After`` are
times: both must lie within the limit's period (a token bucket refills continuously, a fixed window
at its end, so the exact seconds differ by design).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.testclient import TestClient

from opskit.ratelimit import RateLimiter
from opskit.runtime import current
from tests.servers import RedisServer

IMPLEMENTATIONS = ("slowapi", "opskit.ratelimit.slowapi")
LIMIT_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "retry-after")

Call = tuple[str, str]  # (method, path)
Example = Callable[[Any], tuple[Starlette, list[Call]]]


def modules(prefix: str) -> Any:
    """The names an app imports from slowapi (or the shim), under slowapi's module layout."""
    root = importlib.import_module(prefix)
    errors = importlib.import_module(prefix + ".errors")
    util = importlib.import_module(prefix + ".util")
    middleware = importlib.import_module(prefix + ".middleware")
    return SimpleNamespace(
        Limiter=root.Limiter,
        _rate_limit_exceeded_handler=root._rate_limit_exceeded_handler,
        RateLimitExceeded=errors.RateLimitExceeded,
        get_remote_address=util.get_remote_address,
        SlowAPIMiddleware=middleware.SlowAPIMiddleware,
        SlowAPIASGIMiddleware=middleware.SlowAPIASGIMiddleware,
    )


@dataclass
class Seen:
    status: int
    body: str
    headers: dict[str, str]


def observe(example: Example, prefix: str) -> list[Seen]:
    app, calls = example(modules(prefix))
    seen = []
    with TestClient(app) as client:
        for method, path in calls:
            r = client.request(method, path)
            # slowapi repeats its headers once per decorator that sees the response: compare the first.
            headers = {k: v.split(",")[0] for k, v in r.headers.items() if k in LIMIT_HEADERS}
            seen.append(Seen(r.status_code, r.text, headers))
        if client.portal is not None:  # no opskit middleware to close the shim's own limiters: close them here
            client.portal.call(close_limiters)
    return seen


async def close_limiters() -> None:
    for service in current().services.values():
        if isinstance(service, RateLimiter):
            await service.close()


def assert_same(example: Example, period: float = 60.0) -> list[Seen]:
    """Run ``example`` on both; assert they answer alike; return the shim's answers."""
    started = time.time()
    real = observe(example, "slowapi")
    shim = observe(example, "opskit.ratelimit.slowapi")
    assert [s.status for s in shim] == [s.status for s in real]
    for a, b in zip(real, shim, strict=True):
        if a.status == 429:
            assert b.body == a.body
        assert set(b.headers) == set(a.headers)
        for name in ("x-ratelimit-limit", "x-ratelimit-remaining"):
            assert b.headers.get(name) == a.headers.get(name)
        if "x-ratelimit-reset" in b.headers:
            assert started <= float(b.headers["x-ratelimit-reset"]) <= time.time() + period + 1
            assert 0 <= int(b.headers["retry-after"]) <= period + 1
    return shim


def statuses(seen: list[Seen]) -> list[int]:
    return [s.status for s in seen]


# The examples, as slowapi's README and docs write them (Starlette 1 has `add_route`, not `@app.route`).


def starlette_quickstart(s: Any) -> tuple[Starlette, list[Call]]:
    limiter = s.Limiter(key_func=s.get_remote_address)
    app = Starlette()
    app.state.limiter = limiter
    app.add_exception_handler(s.RateLimitExceeded, s._rate_limit_exceeded_handler)

    @limiter.limit("5/minute")
    async def homepage(request: Request) -> PlainTextResponse:
        return PlainTextResponse("test")

    app.add_route("/home", homepage)
    return app, [("GET", "/home")] * 6


def fastapi_quickstart(s: Any, headers_enabled: bool = False) -> tuple[Starlette, list[Call]]:
    limiter = s.Limiter(key_func=s.get_remote_address, headers_enabled=headers_enabled)
    app = FastAPI()
    app.state.limiter = limiter
    app.add_exception_handler(s.RateLimitExceeded, s._rate_limit_exceeded_handler)

    @app.get("/home")
    @limiter.limit("5/minute")
    async def homepage(request: Request) -> PlainTextResponse:
        return PlainTextResponse("test")

    @app.get("/mars")
    @limiter.limit("5/minute")
    async def mars(request: Request, response: Response) -> dict[str, str]:
        return {"key": "value"}

    return app, [("GET", "/home")] * 6 + [("GET", "/mars")] * 6


def default_limit_middleware(s: Any, middleware: str = "SlowAPIMiddleware") -> tuple[Starlette, list[Call]]:
    limiter = s.Limiter(key_func=s.get_remote_address, default_limits=["1/minute"], headers_enabled=True)
    app = Starlette()
    app.state.limiter = limiter
    app.add_exception_handler(s.RateLimitExceeded, s._rate_limit_exceeded_handler)
    app.add_middleware(getattr(s, middleware))

    async def homepage(request: Request) -> PlainTextResponse:
        return PlainTextResponse("Only once per minute")

    @limiter.exempt
    async def t(request: Request) -> PlainTextResponse:
        return PlainTextResponse("I'm unlimited")

    app.add_route("/home", homepage)
    app.add_route("/someroute", t)
    return app, [("GET", "/home")] * 2 + [("GET", "/someroute")] * 3


def disabled(s: Any) -> tuple[Starlette, list[Call]]:
    limiter = s.Limiter(key_func=s.get_remote_address, enabled=False)
    app = Starlette()
    app.state.limiter = limiter

    @limiter.limit("1/minute")
    async def t(request: Request) -> PlainTextResponse:
        return PlainTextResponse("I'm unlimited")

    app.add_route("/someroute", t)
    return app, [("GET", "/someroute")] * 3


def custom_cost(s: Any) -> tuple[Starlette, list[Call]]:
    limiter = s.Limiter(key_func=s.get_remote_address, headers_enabled=True)
    app = Starlette()
    app.state.limiter = limiter
    app.add_exception_handler(s.RateLimitExceeded, s._rate_limit_exceeded_handler)

    def get_hit_cost(request: Request) -> int:
        return len(request)

    @limiter.limit("100/minute", cost=get_hit_cost)
    async def t(request: Request) -> PlainTextResponse:
        return PlainTextResponse("I'm limited by the request size")

    app.add_route("/someroute", t)
    return app, [("GET", "/someroute")] * 8


def key_style(s: Any, style: str) -> tuple[Starlette, list[Call]]:
    limiter = s.Limiter(key_func=lambda: "mock", default_limits=["1/minute"], key_style=style)
    app = Starlette()
    app.state.limiter = limiter
    app.add_exception_handler(s.RateLimitExceeded, s._rate_limit_exceeded_handler)
    app.add_middleware(s.SlowAPIASGIMiddleware)

    async def my_func(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.path_params["some_param"])

    app.add_route("/some_route/{some_param}", my_func)
    return app, [("GET", "/some_route/a"), ("GET", "/some_route/b"), ("GET", "/some_route/a")]


def decorator_options(s: Any) -> tuple[Starlette, list[Call]]:
    """Every decorator argument of the API reference: callables taking the key or the request, shared
    limits, methods, per_method, error messages, exemptions, override_defaults, application limits."""
    limiter = s.Limiter(
        key_func=s.get_remote_address,
        default_limits=["3/minute"],
        application_limits=["50/minute"],
        headers_enabled=True,
    )
    app = FastAPI()
    app.state.limiter = limiter
    app.add_exception_handler(s.RateLimitExceeded, s._rate_limit_exceeded_handler)
    app.add_middleware(s.SlowAPIMiddleware)

    @app.get("/by-key")
    @limiter.limit(lambda key: "2/minute" if key == "testclient" else "10/minute")
    async def by_key(request: Request, response: Response) -> dict[str, str]:
        return {}

    @app.get("/exempt-when")
    @limiter.limit("1/minute", exempt_when=lambda request: request.query_params.get("admin") == "1")
    async def exempt_when(request: Request, response: Response) -> dict[str, str]:
        return {}

    @app.get("/a")
    @limiter.shared_limit("3/minute", scope="shared")
    async def a(request: Request, response: Response) -> dict[str, str]:
        return {}

    @app.get("/b")
    @limiter.shared_limit("3/minute", scope="shared")
    async def b(request: Request, response: Response) -> dict[str, str]:
        return {}

    @app.api_route("/write", methods=["GET", "POST"])
    @limiter.limit("1/minute", methods=["POST"], error_message="slow down")
    async def write(request: Request, response: Response) -> dict[str, str]:
        return {}

    @app.api_route("/each", methods=["GET", "POST"])
    @limiter.limit("1/minute", per_method=True)
    async def each(request: Request, response: Response) -> dict[str, str]:
        return {}

    @app.get("/both")
    @limiter.limit("5/minute", override_defaults=False)
    async def both(request: Request, response: Response) -> dict[str, str]:
        return {}

    @app.get("/stacked")
    @limiter.limit("3/minute")
    @limiter.limit("2/minute")
    async def stacked(request: Request, response: Response) -> dict[str, str]:
        return {}

    @app.get("/plain")
    async def plain(request: Request) -> dict[str, str]:
        return {}

    calls: list[Call] = [("GET", "/by-key")] * 3
    calls += [("GET", "/exempt-when?admin=1")] * 2 + [("GET", "/exempt-when")] * 2
    calls += [("GET", "/a"), ("GET", "/b"), ("GET", "/a"), ("GET", "/b")]
    calls += [("GET", "/write")] * 2 + [("POST", "/write")] * 2
    calls += [("GET", "/each"), ("POST", "/each"), ("GET", "/each"), ("POST", "/each")]
    calls += [("GET", "/both")] * 4 + [("GET", "/stacked")] * 3 + [("GET", "/plain")] * 4
    return app, calls


def redis_storage(url: str) -> Example:
    def example(s: Any) -> tuple[Starlette, list[Call]]:
        limiter = s.Limiter(key_func=s.get_remote_address, storage_uri=url, headers_enabled=True)
        app = Starlette()
        app.state.limiter = limiter
        app.add_exception_handler(s.RateLimitExceeded, s._rate_limit_exceeded_handler)

        @limiter.limit("3/minute")
        async def homepage(request: Request) -> PlainTextResponse:
            return PlainTextResponse("test")

        app.add_route("/home", homepage)
        return app, [("GET", "/home")] * 4

    return example


class TestDocumentedExamples:
    def test_starlette_quickstart(self) -> None:
        """README's Starlette app: 5 per minute, then 429 with slowapi's body."""
        seen = assert_same(starlette_quickstart)
        assert statuses(seen) == [200] * 5 + [429]
        assert seen[-1].body == '{"error":"Rate limit exceeded: 5 per 1 minute"}'

    @pytest.mark.parametrize("headers_enabled", [False, True])
    def test_fastapi_quickstart(self, headers_enabled: bool) -> None:
        """README's FastAPI app, with and without headers (the `response: Response` form)."""
        seen = assert_same(lambda s: fastapi_quickstart(s, headers_enabled))
        assert statuses(seen) == ([200] * 5 + [429]) * 2
        assert bool(seen[0].headers) is headers_enabled
        if headers_enabled:
            assert [x.headers["x-ratelimit-remaining"] for x in seen[6:]] == ["4", "3", "2", "1", "0", "0"]

    @pytest.mark.parametrize("middleware", ["SlowAPIMiddleware", "SlowAPIASGIMiddleware"])
    def test_default_limit_and_exempt_route(self, middleware: str) -> None:
        """docs: a default limit through either middleware; an exempt route stays unlimited."""
        seen = assert_same(lambda s: default_limit_middleware(s, middleware))
        assert statuses(seen) == [200, 429, 200, 200, 200]
        assert seen[0].headers["x-ratelimit-limit"] == "1"
        assert not seen[2].headers

    def test_disabled_limiter(self) -> None:
        """docs: `enabled=False` turns every limit off."""
        assert statuses(assert_same(disabled)) == [200] * 3

    def test_custom_cost_per_hit(self) -> None:
        """docs: a cost function of the request (`len(request)`) spends that many tokens."""
        seen = assert_same(custom_cost)
        assert 429 in statuses(seen) and statuses(seen)[0] == 200

    @pytest.mark.parametrize(("style", "expected"), [("url", [200, 200, 429]), ("endpoint", [200, 429, 429])])
    def test_key_style(self, style: str, expected: list[int]) -> None:
        """docs: key_style="url" counts each URL, "endpoint" each view function."""
        assert statuses(assert_same(lambda s: key_style(s, style))) == expected

    def test_every_decorator_argument(self) -> None:
        """The API reference's arguments: a limit callable taking the key, exempt_when taking the request,
        shared_limit, methods, error_message, per_method, override_defaults, stacked limits and
        application limits through the middleware."""
        seen = assert_same(decorator_options)
        got = statuses(seen)
        assert got[:3] == [200, 200, 429]  # the key function's value picked 2/minute
        assert got[3:7] == [200, 200, 200, 429]  # exempt when ?admin=1
        assert got[7:11] == [200, 200, 200, 429]  # one bucket for /a and /b
        assert got[11:15] == [200, 200, 200, 429]  # only POST is limited
        assert seen[14].body == '{"error":"Rate limit exceeded: slow down"}'
        assert got[15:19] == [200, 200, 429, 429]  # GET and POST have their own buckets
        assert got[19:23] == [200, 200, 200, 429]  # 5/minute plus the default 3/minute
        assert got[23:26] == [200, 200, 429]  # the tighter of two stacked limits
        assert got[26:] == [200, 200, 200, 429]  # undecorated: the default limit via the middleware

    def test_redis_storage(self, redis: RedisServer) -> None:
        """docs: `storage_uri="redis://..."` keeps the buckets in that Redis (the shim's own limiter)."""
        seen = assert_same(redis_storage(redis.url))
        assert statuses(seen) == [200, 200, 200, 429]
        assert any(key.startswith("opskit:rl:") for key in redis.cli("--scan").split())


class TestUnsupportedOptions:
    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"strategy": "moving-window"}, "token bucket"),
            ({"strategy": "sliding-window-counter"}, "token bucket"),
            ({"storage_uri": "memcached://localhost:11211"}, "memcached"),
            ({"storage_uri": "mongodb://localhost:27017"}, "mongodb"),
            ({"storage_options": {"socket_timeout": 1}}, "OPSKIT_REDIS_TIMEOUT"),
            ({"auto_check": False}, "auto_check"),
            ({"in_memory_fallback": ["1/minute"]}, "OPSKIT_RATE_LIMIT_ON_ERROR=memory"),
            ({"in_memory_fallback_enabled": True}, "OPSKIT_RATE_LIMIT_ON_ERROR=memory"),
            ({"config_filename": ".ratelimit"}, "config file"),
            ({"key_style": "path"}, "key_style"),
            ({"retry_after": "soon"}, "retry_after"),
        ],
    )
    def test_fails_where_the_limiter_is_built(self, options: dict[str, Any], message: str) -> None:
        """An option opskit cannot honour raises UnsupportedOption at construction, naming what to do."""
        from opskit.ratelimit.slowapi import Limiter, UnsupportedOption

        with pytest.raises(UnsupportedOption, match=message):
            Limiter(**options)

    def test_slowapi_settings_in_the_environment_fail_too(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """slowapi reads RATELIMIT_* from the environment and .env; opskit refuses rather than ignore them."""
        from opskit.ratelimit.slowapi import Limiter, UnsupportedOption

        monkeypatch.setenv("RATELIMIT_STORAGE_URL", "redis://elsewhere")
        with pytest.raises(UnsupportedOption, match="RATELIMIT_STORAGE_URL"):
            Limiter()

    def test_supported_values_are_accepted(self) -> None:
        """What opskit honours builds without complaint, memory and Redis storage URIs included."""
        from opskit.ratelimit.slowapi import Limiter

        for options in (
            {"strategy": "fixed-window"},
            {"storage_uri": "memory://"},
            {"storage_uri": "async+redis://localhost:6379/0"},
            {"storage_uri": "redis+sentinel://localhost:26379/mymaster"},
            {"retry_after": "http-date", "key_prefix": "app", "swallow_errors": True, "key_style": "endpoint"},
        ):
            Limiter(**options)

    def test_a_bad_static_rate_fails_at_import(self) -> None:
        """slowapi logs a bad rate text and leaves the route unlimited; opskit refuses it when decorating."""
        from opskit.ratelimit.slowapi import Limiter

        async def endpoint(request: Request) -> PlainTextResponse:
            return PlainTextResponse("")

        with pytest.raises(ValueError, match="cannot parse rate"):
            Limiter().limit("five a minute")(endpoint)


@pytest.fixture(autouse=True)
def _no_dotenv(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run where no .env lies (slowapi reads one from the working directory)."""
    monkeypatch.chdir(tmp_path)
    yield
