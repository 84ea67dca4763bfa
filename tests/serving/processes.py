"""Helpers of the serving tests: `opskit serve` as a real process, its workers and its output."""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.servers import ROOT, SCRIPTS, Background, free_port, wait_for_port

OPSKIT = str(SCRIPTS / "opskit-asgi")
STARTED_MARKER = "SERVING_TEST_STARTED_MARKER"  # names a file /slow and /hang create when they begin


def children(pid: int) -> set[int]:
    """The live child processes of ``pid`` (every thread's ``children`` file)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found.update(int(c) for c in (task / "children").read_text().split())
    return found


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    """Poll ``predicate`` until true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def json_lines(text: str) -> list[dict[str, Any]]:
    """Parse every line as one JSON object (fails on the first line that is not)."""
    records = []
    for line in text.splitlines():
        record = json.loads(line)
        assert isinstance(record, dict), line
        records.append(record)
    return records


def events(process: Background) -> list[dict[str, Any]]:
    """The JSON lines the process wrote so far, stdout then stderr."""
    return json_lines(process.stdout()) + json_lines(process.stderr())


@contextlib.contextmanager
def opskit_serve(
    app: str, env: dict[str, str] | None = None, *, wait: bool = True, cwd: Path = ROOT
) -> Iterator[tuple[Background, int]]:
    """``opskit serve app`` on a free loopback port; yields the process and the port.

    The server gets a private TMPDIR, so what it leaves behind when killed (its metrics
    directory) goes with the test.
    """
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="opskit-serve-", ignore_cleanup_errors=True) as tmp:
        base = {"HOST": "127.0.0.1", "PORT": str(port), "OPSKIT_METRICS_ENABLED": "true", "TMPDIR": tmp}
        process = Background([OPSKIT, "serve", app], env={**base, **(env or {})}, cwd=cwd)
        try:
            if wait:
                wait_for_port(port)
            yield process, port
        finally:
            process.close()
