"""slowapi's key functions, proxy-aware under opskit's middleware."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from ..policy import client_address

__all__ = ["get_ipaddr", "get_remote_address"]


def get_remote_address(request: HTTPConnection) -> str:
    """The client address (``127.0.0.1`` when unknown): under opskit's middleware the address its
    trusted-proxy resolution found (the same as the access log's), else the peer."""
    return client_address(request.scope) or "127.0.0.1"


def get_ipaddr(request: HTTPConnection) -> str:
    """slowapi's address from forwarding headers: here the same as :func:`get_remote_address`, since a
    forwarding header counts only when a trusted proxy (``OPSKIT_TRUSTED_PROXIES``) sent it; a
    header any client can set would let every client pick its own bucket."""
    return get_remote_address(request)
