"""Every ASGI framework: route templates, not ``__unmatched__``, and websocket metrics by route."""

from __future__ import annotations

import signal

import httpx
import pytest
from websockets.sync.client import connect

from opskit.routes import RouteTemplates
from tests.metrics.parsing import parse_text
from tests.serving.processes import opskit_serve

APPS = {
    "litestar": ("tests.apps.frameworks:litestar_app", ""),
    "starlette": ("tests.apps.frameworks:starlette_app", ""),
    "fastapi-sub-app": ("tests.apps.frameworks:fastapi_app", "/v2"),
}


def values(metrics: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for f in parse_text(metrics) for s in f.samples if s.name == name}


@pytest.mark.slow
@pytest.mark.parametrize("framework", APPS)
def test_routes_are_templates_and_websockets_are_measured(framework: str) -> None:
    """Through `opskit serve`: requests are labelled by their template, a websocket connection is counted
    opened, no longer open, timed, and its messages counted by direction."""
    app, prefix = APPS[framework]
    with opskit_serve(app, {"WEB_CONCURRENCY": "1"}) as (process, port):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for n in (3, 4):
                assert client.get(f"{prefix}/items/{n}").json() == {"item_id": n}
            assert client.get("/nowhere").status_code == 404
            with connect(f"ws://127.0.0.1:{port}{prefix}/ws/lobby") as socket:
                socket.send("a")
                assert socket.recv(timeout=10) == "lobby:a"
                socket.send("b")
                assert socket.recv(timeout=10) == "lobby:b"
                socket.send("bye")
            metrics = client.get("/metrics").text
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, process.stderr()

    route, ws_route = f"{prefix}/items/{{item_id}}", f"{prefix}/ws/{{room}}"
    requests = values(metrics, "http_requests_total")
    assert requests[(("method", "GET"), ("route", route), ("status", "200"))] == 2
    assert requests[(("method", "GET"), ("route", "__unmatched__"), ("status", "404"))] == 1
    assert values(metrics, "websocket_connections_opened_total") == {(("route", ws_route),): 1}
    assert values(metrics, "websocket_connections_open") == {(("route", ws_route),): 0}
    assert values(metrics, "websocket_connection_duration_seconds_count") == {(("route", ws_route),): 1}
    messages = values(metrics, "websocket_messages_total")
    assert messages == {
        (("direction", "received"), ("route", ws_route)): 3,
        (("direction", "sent"), ("route", ws_route)): 2,
    }


class TestNamedTemplates:
    def test_a_router_naming_its_template_in_the_scope_is_believed(self) -> None:
        """``scope["path_template"]`` (Litestar, or any router: the documented hook) and a text ``scope["route"]``."""
        templates = RouteTemplates(None)
        assert templates.resolve({"path_template": "/a/{id}"}) == "/a/{id}"
        assert templates.resolve({"route": "/b/{id}"}) == "/b/{id}"
        assert templates.resolve({"path_template": ""}) == "__unmatched__"
        assert templates.resolve({"path_template": object()}) == "__unmatched__"
