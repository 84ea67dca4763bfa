"""``OPSKIT_REDIS_URL`` parsed completely, once: what the settings validate is what the backend connects to.

A value that parses here connects without a ``ValueError`` later; everything redis-py would only
discover at the first command (a port that is not a number, an unknown URL option, a missing
certificate file, a Sentinel URL without its master name) is an error here, at startup.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import SplitResult, unquote, urlsplit

from ._base import check_port, split_host_port

__all__ = ["SCHEMES", "RedisTarget", "parse_redis_url"]

SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster", "rediss+cluster")
Kind = Literal["single", "cluster", "sentinel"]

_MASTER_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
_SSL_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_POOL_OPTIONS = ("max_connections", "timeout")  # options of redis-py's pool, not of a connection


@dataclass(frozen=True)
class RedisTarget:
    """Where decisions go: one server, a Cluster (bootstrapped from ``nodes``) or a Sentinel-watched master."""

    kind: Kind
    url: str
    """A URL redis-py's ``from_url`` reads (``+cluster`` removed); empty for Sentinel."""
    nodes: tuple[tuple[str, int], ...] = ()
    """The Sentinels, or the Cluster's bootstrap node; empty for one server."""
    master: str = ""
    db: int = 0
    tls: bool = False
    username: str | None = None
    password: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    """Connection keyword arguments from the URL (host, port, db, credentials and query options)."""


def parse_redis_url(url: str) -> RedisTarget:
    """Parse a Redis URL of any scheme opskit speaks; raises :class:`ValueError` saying what is wrong."""
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise ValueError("expected a URL starting with " + ", ".join(s + "://" for s in SCHEMES))
    parts = urlsplit(url)
    if parts.fragment:
        raise ValueError("a Redis URL has no #fragment")
    if scheme.lower() == "redis+sentinel":
        return _sentinel(parts)
    cluster = scheme.lower().endswith("+cluster")
    plain = url.replace("+cluster", "", 1) if cluster else url
    options = _connection_options(plain)
    if cluster:
        if options.get("db", 0) != 0:
            raise ValueError("Redis Cluster has only database 0")
        nodes = ((str(options["host"]), int(options.get("port", 6379))),)
        return RedisTarget("cluster", plain, nodes, tls=parts.scheme.startswith("rediss"), options=options)
    return RedisTarget(
        "single",
        url,
        db=int(options.get("db", 0)),
        tls=parts.scheme == "rediss",
        username=options.get("username"),
        password=options.get("password"),
        options=options,
    )


def _port(text: str, default: int) -> int:
    return check_port(text) if text else default


def _db(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"database {text!r} is not a number (the URL path is /<db>)")
    return int(text)


def _connection_options(url: str) -> dict[str, Any]:
    """redis-py's reading of a ``redis://``, ``rediss://`` or ``unix://`` URL, checked as a connection would be."""
    from redis.asyncio.connection import Connection, parse_url
    from redis.exceptions import RedisError

    parts = urlsplit(url)
    if parts.scheme == "unix":
        if not parts.path or parts.path == "/":
            raise ValueError("expected unix:///path/to/redis.sock")
    else:
        host, port = split_host_port(parts.netloc.rpartition("@")[2])
        if not host:
            raise ValueError("the URL names no host")
        _port(port, 6379)
        path = unquote(parts.path).strip("/")
        if path:
            _db(path)
    try:
        options: dict[str, Any] = dict(parse_url(url))
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    for name in _SSL_FILES:
        if name in options and not os.path.isfile(options[name]):
            raise ValueError(f"{name}={options[name]!r}: no such file")
    connection_class = options.pop("connection_class", Connection)
    try:
        connection_class(**{k: v for k, v in options.items() if k not in _POOL_OPTIONS})
    except TypeError as exc:
        unknown = str(exc).rpartition(" ")[2]
        raise ValueError(f"unknown URL option {unknown}") from None
    except (RedisError, ValueError) as exc:
        raise ValueError(f"bad URL option: {exc}") from None
    return options


def _sentinel(parts: SplitResult) -> RedisTarget:
    """``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/master[/db]``."""
    if parts.query:
        raise ValueError("redis+sentinel:// URLs take no ?options")
    hosts = parts.netloc.rpartition("@")[2]
    nodes = []
    for member in hosts.split(","):
        host, port = split_host_port(member.strip())
        if not host:
            raise ValueError(f"sentinel address {member!r} names no host")
        nodes.append((host, _port(port, 26379)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError("the URL names no master: redis+sentinel://host:26379/mymaster[/db]")
    if len(path) > 2:
        raise ValueError("expected the path /master or /master/db")
    master = unquote(path[0])
    if not _MASTER_NAME.fullmatch(master):
        raise ValueError(f"master name {master!r} is not letters, digits, '.', '_' and '-'")
    return RedisTarget(
        "sentinel",
        "",
        tuple(nodes),
        master=master,
        db=_db(path[1]) if len(path) > 1 else 0,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )
