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


class TestForward:
    """What a trusted proxy forwarded goes into the scope, checked by opskit's own parser."""

    def test_client_and_scheme_from_a_trusted_proxy(self) -> None:
        """The forwarded client replaces the peer; X-Forwarded-Proto sets the scheme."""
        s = scope("10.0.0.5", (b"x-forwarded-for", b"203.0.113.7"), (b"x-forwarded-proto", b"https"))
        ProxyResolver(["10.0.0.0/8"]).forward(s)
        assert s["client"] == ("203.0.113.7", 0) and s["scheme"] == "https"

    def test_websocket_scheme(self) -> None:
        """A websocket forwarded over https becomes wss."""
        s = {**scope("10.0.0.5", (b"x-forwarded-proto", b"https")), "type": "websocket"}
        ProxyResolver(["10.0.0.0/8"]).forward(s)
        assert s["scheme"] == "wss"

    @pytest.mark.parametrize("hop", [b"bogus-1", b"1.2.3.4, bogus-1", b"1.2.3.4\r\nx"])
    def test_malformed_hops_leave_the_peer(self, hop: bytes) -> None:
        """Garbage at the right of X-Forwarded-For never reaches scope["client"]."""
        s = scope("10.0.0.5", (b"x-forwarded-for", hop))
        ProxyResolver(["10.0.0.0/8"]).forward(s)
        assert s["client"][0] == "10.0.0.5"

    def test_untrusted_peers_and_odd_schemes_change_nothing(self) -> None:
        """From an untrusted peer nothing is applied; a scheme other than http(s) is ignored."""
        s = scope("198.51.100.1", (b"x-forwarded-for", b"203.0.113.7"), (b"x-forwarded-proto", b"https"))
        before = dict(s)
        ProxyResolver(["10.0.0.0/8"]).forward(s)
        assert s == before
        s = scope("10.0.0.5", (b"x-forwarded-proto", b"gopher"))
        ProxyResolver(["10.0.0.0/8"]).forward(s)
        assert s.get("scheme", "http") == "http"

    def test_star_trusts_every_peer(self) -> None:
        """FORWARDED_ALLOW_IPS='*' trusts IPv4 and IPv6 peers alike."""
        r = ProxyResolver(["*"])
        assert r.is_trusted("198.51.100.1") and r.is_trusted("2001:db8::1")
