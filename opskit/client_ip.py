"""Client addresses behind proxies: believe forwarding headers only from trusted peers."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from starlette.types import Scope

__all__ = ["ProxyResolver"]

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


class ProxyResolver:
    """Find the real client of a request.

    With no trusted proxies (the default) the client is the TCP peer. When the peer is a
    trusted proxy, the ``Forwarded`` (RFC 7239) or ``X-Forwarded-For`` hops are walked from the
    right, skipping trusted proxies; the first untrusted hop is the client. A malformed hop ends
    the walk at the last address known to be good, so garbage can never become the client.
    """

    __slots__ = ("_networks", "_trusted_cache")

    def __init__(self, trusted: Iterable[str] = ()) -> None:
        self._networks: tuple[_Network, ...] = tuple(ipaddress.ip_network(c, strict=False) for c in trusted)
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
