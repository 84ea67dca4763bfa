"""Real servers for the tests: free ports, redis-server (also as Cluster, TLS and Sentinel), and
background processes. The basic process helpers are the benchmark harness's own.

Every server is started by the test that needs it, on a free loopback port, and stopped
afterwards. Nothing here is mocked.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.processes import (
    ROOT,
    TOOLS_BIN,
    Background,
    RedisServer,
    free_port,
    listening_socket,
    redis_server,
    wait_for_port,
    which,
)

# The console scripts of the environment running the tests (`make` keeps one venv per Python).
SCRIPTS = Path(sys.executable).parent

__all__ = [
    "ROOT",
    "SCRIPTS",
    "TOOLS_BIN",
    "Background",
    "RedisServer",
    "free_port",
    "listening_socket",
    "redis_server",
    "wait_for_port",
    "which",
]


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is valid and free too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535:
            port = 20000 + port % 30000
        try:
            for candidate in (port, port + 10000):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


class RedisClusterNode(RedisServer):
    """A redis-server with ``--cluster-enabled yes`` on a port whose bus port is free."""

    def __init__(self, *extra: str) -> None:
        self.port = free_cluster_port()
        self.dir = tempfile.mkdtemp(prefix="opskit-redis-cluster-")
        self.extra = ("--cluster-enabled", "yes", "--cluster-node-timeout", "2000", *extra)
        self.process = None
        self.start()


class RedisClusterServers:
    """A Redis Cluster of ``masters`` redis-server processes (no replicas) on free loopback ports;
    ``extra`` arguments go to every node."""

    def __init__(self, masters: int = 3, *extra: str) -> None:
        self.nodes: list[RedisServer] = []
        try:
            for _ in range(masters):
                self.nodes.append(RedisClusterNode(*extra))
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            subprocess.run(
                [which("redis-cli"), "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=30,
            )
            self._wait_ok()
        except BaseException:
            self.close()
            raise

    def _wait_ok(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not all("cluster_state:ok" in node.cli("cluster", "info") for node in self.nodes):
            if time.monotonic() > deadline:
                raise TimeoutError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        """The opskit URL of the cluster (any node bootstraps the client)."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}/0"

    def keys(self, pattern: str = "*") -> list[str]:
        """Every key on every master matching ``pattern``."""
        found: list[str] = []
        for node in self.nodes:
            found += [k for k in node.cli("--scan", "--pattern", pattern).splitlines() if k]
        return found

    def close(self) -> None:
        for node in self.nodes:
            node.close()


@contextlib.contextmanager
def redis_cluster(masters: int = 3) -> Iterator[RedisClusterServers]:
    """A started Redis Cluster, stopped afterwards."""
    cluster = RedisClusterServers(masters)
    try:
        yield cluster
    finally:
        cluster.close()


def _openssl(*args: str) -> None:
    subprocess.run([which("openssl"), *args], check=True, capture_output=True, timeout=30)


class TlsRedisServer(RedisServer):
    """A redis-server speaking only TLS, with a throw-away CA; connect with :attr:`url`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="opskit-redis-tls-")
        d = Path(self.dir)
        self.ca = str(d / "ca.crt")
        cert, key, csr, ext = (str(d / name) for name in ("server.crt", "server.key", "server.csr", "san.ext"))
        rsa = ("-newkey", "rsa:2048", "-nodes")
        # Python 3.13 verifies strictly (VERIFY_X509_STRICT): the CA states its key usage, the leaf its issuer's key.
        _openssl("req", "-x509", *rsa, "-days", "1", "-subj", "/CN=opskit-test-ca", "-keyout", str(d / "ca.key"),
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", self.ca)  # fmt: skip
        _openssl("req", *rsa, "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", csr)
        Path(ext).write_text("subjectAltName=IP:127.0.0.1\nauthorityKeyIdentifier=keyid,issuer\n")
        _openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", str(d / "ca.key"), "-CAcreateserial",
                 "-days", "1", "-extfile", ext, "-out", cert)  # fmt: skip
        tls = ("--tls-port", str(self.port), "--tls-cert-file", cert, "--tls-key-file", key)
        self.extra = ("--port", "0", *tls, "--tls-ca-cert-file", self.ca, "--tls-auth-clients", "no")
        self.process = None
        self.start()

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.ca}"


class RedisSentinelServer:
    """A redis-server in Sentinel mode watching ``master`` under the name ``mymaster``."""

    def __init__(self, master: RedisServer, name: str = "mymaster") -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="opskit-sentinel-")
        self.name = name
        conf = os.path.join(self.dir, "sentinel.conf")
        Path(conf).write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
            f"sentinel monitor {name} 127.0.0.1 {master.port} 1\n"
            f"sentinel down-after-milliseconds {name} 2000\n"
        )
        self.process = Background([which("redis-server"), conf, "--sentinel"])
        wait_for_port(self.port)

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.name}/0"

    def close(self) -> None:
        self.process.close()
        shutil.rmtree(self.dir, ignore_errors=True)
