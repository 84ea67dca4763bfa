"""An app behaves exactly as without opskit: same statuses, bodies and headers (but opskit's own)."""

from __future__ import annotations

import httpx2 as httpx
import pytest
from starlette.testclient import TestClient

from tests.apps import full

OPSKIT_HEADERS = {"x-request-id"}
REQUESTS = [
    ("GET", "/items/5", None),
    ("GET", "/items/nope", None),
    ("GET", "/api/v1/users/9", None),
    ("GET", "/sync", None),
    ("GET", "/background", None),
    ("GET", "/stream", None),
    ("GET", "/file", None),
    ("HEAD", "/file", None),
    ("GET", "/teapot", None),
    ("GET", "/http-error", None),
    ("GET", "/boom", None),
    ("POST", "/echo", b"payload \x00\xff bytes"),
    ("GET", "/sub/hello/bob", None),
    ("GET", "/sub/missing", None),
    ("GET", "/missing", None),
    ("POST", "/items/1", None),
    ("GET", "/items/1/", None),
]


# These endpoints return opskit.request_id() in their JSON body, so body and length differ by design.
ECHO_ID = {"/sync", "/items/5"}


def _comparable(response: httpx.Response, path: str) -> tuple[int, object, list[tuple[str, str]]]:
    skip = OPSKIT_HEADERS | ({"content-length"} if path in ECHO_ID else set())
    headers = [(k, v) for k, v in response.headers.multi_items() if k not in skip]
    body: object = response.content
    if path in ECHO_ID:
        body = {k: v for k, v in response.json().items() if k != "request_id"}
    return response.status_code, body, headers


@pytest.mark.parametrize(("method", "path", "body"), REQUESTS, ids=[f"{m} {p}" for m, p, _ in REQUESTS])
def test_same_response_with_and_without_opskit(method: str, path: str, body: bytes | None) -> None:
    """Every kind of endpoint answers the same bytes with opskit installed."""
    plain = TestClient(full.create(instrumented=False), raise_server_exceptions=False)
    instrumented = TestClient(full.create(), raise_server_exceptions=False)
    a = plain.request(method, path, content=body, follow_redirects=False)
    b = instrumented.request(method, path, content=body, follow_redirects=False)
    assert _comparable(a, path) == _comparable(b, path)
    assert "x-request-id" in b.headers


def test_websocket_same_with_and_without_opskit() -> None:
    """Websocket conversations are unchanged (opskit adds only its header)."""
    for app in (full.create(instrumented=False), full.create()):
        with TestClient(app).websocket_connect("/ws") as ws:
            ws.send_text("x")
            reply = ws.receive_text()
            assert reply.startswith("echo x")


def test_unhandled_exceptions_still_reach_test_clients() -> None:
    """Like Starlette, opskit re-raises unhandled exceptions after answering 500, so tests see them."""
    with pytest.raises(RuntimeError, match="kaboom"):
        TestClient(full.create()).get("/boom")
