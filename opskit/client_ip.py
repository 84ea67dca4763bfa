"""Client addresses behind proxies: believe forwarding headers only from trusted peers."""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Iterable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from starlette.types import Scope

if TYPE_CHECKING:
    from .settings import Settings

__all__ = ["PEER_KEY", "ProxyResolver", "server_proxy_headers", "trusted_peers"]

#: The scope key keeping the TCP peer of a request whose client :meth:`ProxyResolver.forward` replaced.
PEER_KEY = "opskit.peer"

_SCHEMES = {"http": ("http", "ws"), "https": ("https", "wss")}

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_CACHE_LIMIT = 4096


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address from an X-Forwarded-For or Forwarded ``for=`` value, port and brackets stripped."""
    text = text.strip().strip('"')
    if text.startswith("["):  # [2001:db8::1]:443
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # 1.2.3.4:5678
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _forwarded_for(value: str) -> list[str]:
    """The ``for=`` hops of an RFC 7239 ``Forwarded`` header, in order."""
    hops = []
    for element in value.split(","):
        for pair in element.split(";"):
            key, _, val = pair.partition("=")
            if key.strip().lower() == "for":
                hops.append(val)
    return hops


def trusted_peers(settings: Settings) -> tuple[str, ...]:
    """Peers whose forwarding headers are believed: ``FORWARDED_ALLOW_IPS`` when set (the servers'
    standard name), else ``OPSKIT_TRUSTED_PROXIES`` (default: nobody)."""
    if settings.forwarded_allow_ips is not None:
        return tuple(settings.forwarded_allow_ips)
    return tuple(settings.trusted_proxies)


class ProxyResolver:
    """Find the real client of a request.

    With no trusted proxies (the default) the client is the TCP peer. When the peer is a
    trusted proxy, the ``Forwarded`` (RFC 7239) or ``X-Forwarded-For`` hops are walked from the
    right, skipping trusted proxies; the first untrusted hop is the client. A malformed hop ends
    the walk at the last address known to be good, so garbage can never become the client.
    """

    __slots__ = ("_networks", "_trusted_cache")

    def __init__(self, trusted: Iterable[str] = ()) -> None:
        cidrs = [c for t in trusted for c in (("0.0.0.0/0", "::/0") if t == "*" else (t,))]
        self._networks: tuple[_Network, ...] = tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)
        self._trusted_cache: dict[str, bool] = {}

    @property
    def enabled(self) -> bool:
        return bool(self._networks)

    def is_trusted(self, address: str) -> bool:
        cached = self._trusted_cache.get(address)
        if cached is None:
            ip = _parse_ip(address)
            cached = ip is not None and any(ip in net for net in self._networks)
            if len(self._trusted_cache) >= _CACHE_LIMIT:
                self._trusted_cache.clear()
            self._trusted_cache[address] = cached
        return cached

    def via_trusted_proxy(self, scope: Scope) -> bool:
        """Whether the TCP peer of ``scope`` is a trusted proxy (also after :meth:`forward` replaced the client)."""
        if not self._networks:
            return False
        peer = scope.get(PEER_KEY) or scope.get("client")
        return peer is not None and self.is_trusted(peer[0])

    def client(self, scope: Scope) -> str | None:
        """The client address of ``scope`` (the peer, unless a trusted proxy forwarded it)."""
        peer = scope.get("client")
        host: str | None = peer[0] if peer else None
        if host is None or not self._networks or not self.is_trusted(host):
            return host
        forwarded: list[bytes] = []
        xff: list[bytes] = []
        for name, value in scope.get("headers", ()):
            if name == b"forwarded":
                forwarded.append(value)
            elif name == b"x-forwarded-for":
                xff.append(value)
        if forwarded:
            hops = _forwarded_for(b",".join(forwarded).decode("latin-1"))
        elif xff:
            hops = b",".join(xff).decode("latin-1").split(",")
        else:
            return host
        return self._walk(hops, host)

    def forward(self, scope: Scope) -> None:
        """Put the client (and ``X-Forwarded-Proto``'s scheme) a trusted proxy forwarded into ``scope``.

        Only opskit's own parser decides: a malformed hop never reaches ``scope["client"]``, and a
        scheme other than http(s) is ignored. Requests from untrusted peers are left as they are.
        """
        peer = scope.get("client")
        if not peer or not self.is_trusted(peer[0]):
            return
        client = self.client(scope)
        if client is not None and client != peer[0]:
            scope[PEER_KEY] = peer
            scope["client"] = (client, 0)
        proto: bytes | None = None
        for name, value in scope.get("headers", ()):
            if name == b"x-forwarded-proto":
                proto = value
        if proto is not None:
            schemes = _SCHEMES.get(proto.decode("latin-1").rpartition(",")[2].strip().lower())
            if schemes is not None:
                scope["scheme"] = schemes[scope.get("type") == "websocket"]

    def _walk(self, hops: Sequence[str], peer: str) -> str:
        client = peer
        for hop in reversed(hops):
            ip = _parse_ip(hop)
            if ip is None:
                return client
            client = str(ip)
            if not self.is_trusted(client):
                return client
        return client


def server_proxy_headers(depth: int = 30) -> str | None:
    """Who the server in front of this call applies ``X-Forwarded-For`` from, when it does itself.

    Plain ``uvicorn`` wraps the app in its ``ProxyHeadersMiddleware``, trusting 127.0.0.1 unless
    told otherwise, and puts a forwarded hop in ``scope["client"]`` unchecked. Called during the
    lifespan (the server's middleware is then among the calling frames), this finds it: its trusted
    hosts as text, or None.
    """
    frame: FrameType | None = sys._getframe(1)
    for _ in range(depth):
        if frame is None:
            return None
        owner: Any = frame.f_locals.get("self")
        if type(owner).__name__ == "ProxyHeadersMiddleware" and type(owner).__module__.startswith("uvicorn."):
            hosts = getattr(owner, "trusted_hosts", None)
            if getattr(hosts, "always_trust", False):
                return "*"
            names = [
                *map(str, getattr(hosts, "trusted_hosts", ())),
                *map(str, getattr(hosts, "trusted_networks", ())),
                *getattr(hosts, "trusted_literals", ()),
            ]
            return ",".join(sorted(names)) or None
        frame = frame.f_back
    return None
