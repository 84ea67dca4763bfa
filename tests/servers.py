"""Real servers for the tests: free ports, redis-server, and background processes.

Every server is started by the test that needs it, on a free loopback port, and stopped
afterwards. Nothing here is mocked.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
TOOLS_BIN = ROOT / ".tools" / "bin"
# The console scripts of the environment running the tests (`make` keeps one venv per Python).
SCRIPTS = Path(sys.executable).parent


def which(program: str) -> str:
    """Locate an external program on PATH or in ``.tools/bin``; fail with the install hint."""
    found = shutil.which(program) or shutil.which(program, path=str(TOOLS_BIN))
    if found is None:
        raise RuntimeError(f"{program} not found: run scripts/install-tools (make test does)")
    return found


def free_port() -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening_socket() -> socket.socket:
    """A bound, listening loopback socket on a free port, to hand to a server by fd.

    Unlike :func:`free_port`, nothing can take the port between choosing and serving it.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(128)
    s.set_inheritable(True)
    return s


def wait_for_port(port: int, timeout: float = 15.0, host: str = "127.0.0.1") -> None:
    """Block until something accepts connections on ``port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.02)


class Background:
    """A process started in its own session, stopped (and reaped) on close."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        capture: bool = True,
        pass_fds: Sequence[int] = (),
    ) -> None:
        self.argv = list(argv)
        self._out = tempfile.TemporaryFile() if capture else None  # noqa: SIM115 (closed with the process)
        self._err = tempfile.TemporaryFile() if capture else None  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.argv,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            stdout=self._out,
            stderr=self._err,
            start_new_session=True,
            pass_fds=tuple(pass_fds),
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal the process group, then SIGKILL it if it outlives ``timeout``."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        return self.proc.returncode

    def close(self) -> None:
        """Stop the process and release its captured output."""
        self.stop(signal.SIGKILL)
        for f in (self._out, self._err):
            if f is not None:
                f.close()

    def _read(self, f: IO[bytes] | None) -> str:
        if f is None:
            return ""
        f.seek(0)
        return f.read().decode("utf-8", "replace")

    def stdout(self) -> str:
        return self._read(self._out)

    def stderr(self) -> str:
        return self._read(self._err)


class RedisServer:
    """A private ``redis-server`` on a free loopback port, without persistence."""

    def __init__(self, *extra: str) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="opskit-redis-")
        self.extra = extra
        self.process: Background | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if self.process is not None:
            self.process.close()
        argv = [
            which("redis-server"),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.dir,
            *self.extra,
        ]
        self.process = Background(argv)
        wait_for_port(self.port)

    def kill(self) -> None:
        """Kill the server abruptly (SIGKILL), as a crash would."""
        if self.process is not None:
            self.process.stop(signal.SIGKILL)

    def freeze(self) -> None:
        """SIGSTOP: the port stays open but nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.kill()
        self.start()

    def cli(self, *args: str) -> str:
        """Run ``redis-cli`` against this server and return its output."""
        return subprocess.run(
            [which("redis-cli"), "-p", str(self.port), *args], check=True, capture_output=True, text=True, timeout=10
        ).stdout

    def close(self) -> None:
        if self.process is not None:
            with contextlib.suppress(Exception):
                self.thaw()
            self.process.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def redis_server(*extra: str) -> Iterator[RedisServer]:
    server = RedisServer(*extra)
    try:
        yield server
    finally:
        server.close()


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

    def __init__(self) -> None:
        self.port = free_cluster_port()
        self.dir = tempfile.mkdtemp(prefix="opskit-redis-cluster-")
        self.extra = ("--cluster-enabled", "yes", "--cluster-node-timeout", "2000")
        self.process = None
        self.start()


class RedisClusterServers:
    """A Redis Cluster of ``masters`` redis-server processes (no replicas) on free loopback ports."""

    def __init__(self, masters: int = 3) -> None:
        self.nodes: list[RedisServer] = []
        try:
            for _ in range(masters):
                self.nodes.append(RedisClusterNode())
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
