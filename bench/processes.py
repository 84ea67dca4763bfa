"""Processes the benchmarks and the tests run for real: free ports, redis-server, background processes.

Every server is started by the code that needs it, on a free loopback port, and stopped
afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

__all__ = [
    "ROOT",
    "TOOLS_BIN",
    "Background",
    "RedisServer",
    "free_port",
    "listening_socket",
    "redis_server",
    "wait_for_port",
    "which",
]

ROOT = Path(__file__).resolve().parent.parent
TOOLS_BIN = ROOT / ".tools" / "bin"


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
        # The child writes through the same open file, so the two share one offset: a seek here
        # would make it write over what it wrote before. pread leaves the offset alone.
        fd = f.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode("utf-8", "replace")

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
