"""Route templates come from what the router left in the scope, never from matching again."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.testclient import TestClient

from opskit.routes import RouteTemplates


def test_routes_added_after_creation_are_learned() -> None:
    """A route registered after the map was built is found on first sight."""
    app = FastAPI()
    templates = RouteTemplates(app)
    seen: list[str] = []

    @app.get("/late/{x}")
    async def late(x: str) -> None:
        pass

    async def spy(scope: dict[str, object], receive: object, send: object) -> None:
        await app(scope, receive, send)  # type: ignore[arg-type]
        seen.append(templates.resolve(scope))

    TestClient(spy).get("/late/1")  # type: ignore[arg-type]
    assert seen == ["/late/{x}"]


def test_static_mount_is_one_template(tmp_path: object) -> None:
    """A mounted app without routes (static files) is a single bounded template."""
    app = FastAPI()
    app.router.routes.append(Mount("/static", app=StaticFiles(directory=str(tmp_path))))
    templates = RouteTemplates(app)
    mount = app.router.routes[-1]
    assert templates.resolve({"route": mount}) == "/static/{path}"


def test_unknown_object_is_bounded() -> None:
    """Something that is not a known route resolves to the unmatched value."""
    templates = RouteTemplates(FastAPI(), unmatched="OTHER")
    assert templates.resolve({"endpoint": object()}) == "OTHER"
    assert templates.resolve({}) == "OTHER"
