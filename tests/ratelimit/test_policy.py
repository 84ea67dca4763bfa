"""Policies: names, storage keys and key functions."""

from __future__ import annotations

import pytest

from opskit.ratelimit import Policy
from opskit.ratelimit.policy import client_ip, header_key, key_from_spec


def scope(peer: str = "192.0.2.1", **headers: str) -> dict[str, object]:
    return {
        "type": "http",
        "client": (peer, 1234),
        "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
    }


class TestStorageKeys:
    def test_route_templates_stay_inside_the_hash_tag_rules(self) -> None:
        """Braces of a route template never reach the key: the only hash tag is the client hash."""
        key = Policy.build("/items/{item_id}", "5/second").storage_key("p:", "ip:192.0.2.1")
        assert key.startswith("p:/items/(item_id):{") and key.count("{") == 1 and key.endswith("}")

    def test_huge_client_keys_are_hashed_not_kept(self) -> None:
        """An 8 KB API key yields a short storage key and is not cached."""
        policy = Policy.build("api", "5/second", key="header:X-API-Key")
        huge = "k" * 8192
        assert len(policy.storage_key("p:", huge)) < 64
        assert all(len(client) <= 256 for _, client in policy._keys)

    def test_names_must_be_printable(self) -> None:
        """A policy name with a newline (it becomes a header value and a label) is refused."""
        with pytest.raises(ValueError):
            Policy.build("bad\nname", "5/second")


class TestKeyFunctions:
    def test_client_ip_without_middleware_is_the_peer(self) -> None:
        """Outside opskit's middleware the key is the direct peer (forwarding headers ignored)."""
        assert client_ip(scope(x_forwarded_for="203.0.113.9")) == "ip:192.0.2.1"

    def test_header_key_falls_back_to_the_address(self) -> None:
        """With the header the key is its value; without it, the client address."""
        key = header_key("X-API-Key")
        assert key(scope(x_api_key="alpha")) == "h:alpha"
        assert key(scope()) == "ip:192.0.2.1"

    def test_unknown_spec_is_refused(self) -> None:
        """Only `ip`, `header:<Name>` or a callable."""
        with pytest.raises(ValueError, match="unknown key"):
            key_from_spec("cookie:session")
