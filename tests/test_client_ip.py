"""Client addresses: forwarding headers believed only from trusted proxies."""

from __future__ import annotations

from typing import Any

import pytest

from opskit.client_ip import ProxyResolver


def scope(peer: str | None, *headers: tuple[bytes, bytes]) -> dict[str, Any]:
    return {"client": (peer, 1234) if peer else None, "headers": list(headers)}


class TestProxyResolver:
    def test_no_trusted_proxies_means_the_peer(self) -> None:
        """By default X-Forwarded-For is ignored entirely."""
        r = ProxyResolver()
        assert r.client(scope("203.0.113.9", (b"x-forwarded-for", b"1.2.3.4"))) == "203.0.113.9"

    def test_untrusted_peer_cannot_spoof(self) -> None:
        """A client that is not a configured proxy cannot pick its address."""
        r = ProxyResolver(["10.0.0.0/8"])
        assert r.client(scope("203.0.113.9", (b"x-forwarded-for", b"1.2.3.4"))) == "203.0.113.9"

    def test_rightmost_untrusted_hop_wins(self) -> None:
        """Spoofed left-most entries are skipped: the proxy's own appended hop is used."""
        r = ProxyResolver(["10.0.0.0/8"])
        s = scope("10.0.0.5", (b"x-forwarded-for", b"6.6.6.6, 198.51.100.7, 10.0.0.9"))
        assert r.client(s) == "198.51.100.7"

    def test_multiple_headers_are_joined(self) -> None:
        """Several X-Forwarded-For headers form one list."""
        r = ProxyResolver(["10.0.0.0/8"])
        s = scope("10.0.0.5", (b"x-forwarded-for", b"6.6.6.6"), (b"x-forwarded-for", b"198.51.100.7"))
        assert r.client(s) == "198.51.100.7"

    def test_forwarded_header(self) -> None:
        """RFC 7239 Forwarded, with quoted IPv6 and ports."""
        r = ProxyResolver(["10.0.0.0/8"])
        s = scope("10.0.0.5", (b"forwarded", b'for=192.0.2.60;proto=http, for="[2001:db8:cafe::17]:4711"'))
        assert r.client(s) == "2001:db8:cafe::17"

    @pytest.mark.parametrize("garbage", [b"not-an-ip", b"1.2.3.4\r\nx: y", b"", b"999.1.1.1"])
    def test_garbage_hop_never_becomes_the_client(self, garbage: bytes) -> None:
        """A malformed hop stops the walk at the last good address."""
        r = ProxyResolver(["10.0.0.0/8"])
        assert r.client(scope("10.0.0.5", (b"x-forwarded-for", garbage))) == "10.0.0.5"

    def test_all_hops_trusted_gives_the_leftmost(self) -> None:
        """When every hop is a trusted proxy, the furthest one is the best answer."""
        r = ProxyResolver(["10.0.0.0/8"])
        assert r.client(scope("10.0.0.5", (b"x-forwarded-for", b"10.1.1.1, 10.2.2.2"))) == "10.1.1.1"

    def test_no_client(self) -> None:
        """A scope without a peer (unix socket) has no client."""
        assert ProxyResolver(["10.0.0.0/8"]).client(scope(None)) is None
