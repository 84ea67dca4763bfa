"""Websocket limits: the handshake goes through the route's limits, messages through their own."""

from __future__ import annotations

from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketState

from .limiter import RateLimiter
from .policy import Policy

__all__ = ["MESSAGE_LIMIT_CLOSE_CODE", "limit_messages"]

#: The close code of a connection that sent messages faster than its limit (policy violation).
MESSAGE_LIMIT_CLOSE_CODE = 1008
_REASON = "Rate limit exceeded"


def limit_messages(websocket: WebSocket, limiter: RateLimiter, policy: Policy, client_key: str) -> None:
    """Count every message ``websocket`` receives against ``policy`` for ``client_key``.

    The first message over the limit is not delivered: the connection is closed with 1008 and the
    app receives a disconnect (``WebSocketDisconnect(1008)``), as if the client had left. A failing
    backend follows the limiter's failure policy, as for requests.
    """
    receive = websocket._receive

    async def limited() -> Message:
        message = await receive()
        if message["type"] != "websocket.receive":
            return message
        decision = await limiter.hit(policy, client_key)
        if decision.allowed:
            return message
        if websocket.application_state != WebSocketState.DISCONNECTED:
            await websocket.close(MESSAGE_LIMIT_CLOSE_CODE, _REASON)
        return {"type": "websocket.disconnect", "code": MESSAGE_LIMIT_CLOSE_CODE, "reason": _REASON}

    websocket._receive = limited
