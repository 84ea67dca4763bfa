"""Shared machinery of the settings sections: env names, list parsing, error messages."""

from __future__ import annotations

import ipaddress
from typing import Any

from pydantic import AliasChoices
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "OPSKIT_"


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the environment variable."""


class SettingsSection(BaseSettings):
    """Base of every settings section: ``OPSKIT_`` prefix, unknown variables ignored."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        extra="ignore",
        populate_by_name=True,
        validate_default=True,
        frozen=True,
    )


def env(*names: str) -> AliasChoices:
    """Read a field from standard variable names (first wins) instead of ``OPSKIT_<FIELD>``."""
    return AliasChoices(*names)


def check_cidrs(value: tuple[str, ...]) -> tuple[str, ...]:
    """Validate a tuple of CIDRs (or single addresses) for a list-of-networks setting."""
    for cidr in value:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ValueError(f"{cidr!r} is not a network; expected CIDRs like 10.0.0.0/8,127.0.0.1") from None
    return value


def split_list(value: Any) -> Any:
    """Accept ``a,b,c`` (and JSON-ish lists from code) for tuple-valued settings."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1].replace('"', "").replace("'", "")
        return tuple(part.strip() for part in text.split(",") if part.strip())
    return value


def check_port(text: str, *, allow_zero: bool = False) -> int:
    """A TCP port number from its text; raises :class:`ValueError` naming the bad text."""
    low = 0 if allow_zero else 1
    if not text.isdigit() or not low <= int(text) <= 65535:
        raise ValueError(f"port {text!r} is not a number from {low} to 65535")
    return int(text)


def split_host_port(netloc: str) -> tuple[str, str]:
    """Split ``host:port`` or ``[IPv6]:port`` (the port may be empty) without checking the port."""
    if netloc.startswith("["):
        host, bracket, rest = netloc[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{netloc!r} is not [IPv6]:PORT")
        return host, rest[1:]
    host, _, port = netloc.partition(":")
    if ":" in port:
        raise ValueError(f"{netloc!r} is not HOST:PORT (an IPv6 address goes in brackets)")
    return host, port


def check_host(value: str) -> str:
    """A host name, an IPv4 address or a bare IPv6 address (no brackets, no port)."""
    if ":" in value:
        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a host: expected a name or an IP address, no port") from None
    elif not value or any(c.isspace() or c in "/,[]@" for c in value):
        raise ValueError(f"{value!r} is not a host: expected a name or an IP address")
    return value


def check_path_patterns(value: tuple[str, ...]) -> tuple[str, ...]:
    """Paths of an exclude or exempt list: each starts with ``/``, with ``*`` only as its last character."""
    for pattern in value:
        if not pattern.startswith("/") or "*" in pattern[:-1]:
            raise ValueError(f"{pattern!r} is not a path pattern; expected /exact/path or /prefix/* (one * at the end)")
    return value
