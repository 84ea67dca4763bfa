"""Per-line cost of OTLP logs against the stdout writer (not a test): ``python bench/logs_micro.py``.

Writes the same access-log line as the access log does (``write_json``, a dict rendered by orjson)
through opskit's line writer, to ``/dev/null`` by file descriptor as on a container's stdout:

- ``stdout``: the line rendered and written (one ``write(2)`` per line outside an event loop);
- ``OTLP + stdout``: the OTLP exporter on too;
- ``OTLP alone``: ``OPSKIT_LOG_STDOUT=false``.

The OTLP rows count the writing thread and the export thread's share (encoding, where the line was
queued rendered, and batching): the whole CPU a line costs.

Two shapes of line: the access log's (16 keys) and an app's structlog line with five fields of its
own (its processor chain included: what every line pays, with or without OTLP). With the native
encoder (``opskit.otlp.native.log_record``) both become their record where they are written, before
they are rendered; with the ``python`` encoder, the rendered line is queued and the export thread
parses and encodes it.

Reports CPU microseconds per line, best of ROUNDS, each column measured in the same run; with
``--instructions``, valgrind's instruction count per line of each path instead (the difference of
two runs of different lengths, so start-up cancels out), which does not move with the machine's load.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import orjson

import opskit
from opskit.logging import otlp, record
from opskit.logging.otlp import OtlpLogs
from opskit.logging.writer import WRITER, write_json
from opskit.metrics.registry import Registry
from opskit.settings import load_settings

LINES = 20_000
ROUNDS = 5
RECORD: dict[str, Any] = {
    "timestamp": "2026-01-01T00:00:00.000000Z",
    "level": "info",
    "logger": "opskit.access",
    "event": "request",
    "method": "GET",
    "route": "/items/{item_id}",
    "path": "/items/42",
    "status": 200,
    "duration_ms": 0.412,
    "response_bytes": 63,
    "client": "10.0.0.7",
    "user_agent": "wrk",
    "service": "bench",
    "request_id": "6f1c2a5e0b8d4e2f9a7c3b1d5e8f0a2c",
    "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    "span_id": "00f067aa0ba902b7",
}
LINE = orjson.dumps(RECORD, option=orjson.OPT_APPEND_NEWLINE)


def per_line(run: Callable[[], None]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.process_time()
        run()
        best = min(best, time.process_time() - start)
    return best / LINES * 1e6


def _app_line() -> None:
    APP_LOG.info("order paid", order_id=4711, amount=19.99, currency="EUR", customer="c-8812", retries=0)


def _access_line() -> None:
    write_json(RECORD)


APP_LOG: Any = None
SHAPES = {"access line": _access_line, "app line": _app_line}


def _paths() -> dict[str, Callable[[], None]]:
    """Each measured path, as one run of LINES lines: for each shape of line, stdout alone, then
    OTLP with stdout, then OTLP alone with the export thread's share, by each encoder."""
    global APP_LOG
    exporter = OtlpLogs(
        load_settings(logs_exporter="otlp", blrp_max_queue_size=LINES, blrp_max_export_batch_size=512), Registry(None)
    )
    queue = exporter.queue
    native = record.encode_native
    # Both modules hold the encoder: the writer's tap (otlp) and the export thread's parse path (record).
    modules = (vars(otlp), vars(record))
    APP_LOG = opskit.get_logger("shop.orders")

    def export() -> None:
        while len(queue):
            exporter.encode(queue.take(queue.batch_size))

    def writing(line: Callable[[], None], encoder: bool, tap: bool, stdout: bool) -> Callable[[], None]:
        def run() -> None:
            for module in modules:
                module["encode_native"] = native if encoder else None
            WRITER.tap = queue.put if tap else None
            WRITER.record_tap = queue.put_record if tap and encoder else None
            WRITER.stdout = stdout
            try:
                for _ in range(LINES):
                    line()
                if tap:
                    export()
                queue.clear()
            finally:
                for module in modules:
                    module["encode_native"] = native
                WRITER.tap = WRITER.record_tap = None
                WRITER.stdout = True

        return run

    paths = {}
    for shape, line in SHAPES.items():
        paths[f"{shape}: stdout"] = writing(line, False, False, True)
        for name, encoder in (("native", True), ("python", False)):
            if encoder and native is None:
                continue
            paths[f"{shape}: {name}, OTLP + stdout"] = writing(line, encoder, True, True)
            paths[f"{shape}: {name}, OTLP alone"] = writing(line, encoder, True, False)
    return paths


def _instructions(name: str, lines: int) -> int:
    with tempfile.TemporaryDirectory() as work:
        out = os.path.join(work, "out")
        result = subprocess.run(
            [
                "valgrind",
                "--tool=cachegrind",
                "--cache-sim=no",
                f"--cachegrind-out-file={out}",
                sys.executable,
                __file__,
                "--run",
                name,
                str(lines),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    return int(re.search(r"I\s+refs:\s+([\d,]+)", result.stderr).group(1).replace(",", ""))  # type: ignore[union-attr]


def main() -> None:
    global LINES
    with open("/dev/null", "wb", buffering=0) as devnull:
        opskit.configure_logging(load_settings(service_name="bench"), stream=devnull)
        if sys.argv[1:2] == ["--run"]:
            LINES = int(sys.argv[3])
            _paths()[sys.argv[2]]()
            return
        counting = "--instructions" in sys.argv[1:]
        print(f"{'path':<44} {'instructions/line' if counting else 'µs/line'}")
        for name, run in _paths().items():
            if counting:
                value = (_instructions(name, 6_000) - _instructions(name, 1_000)) / 5_000
                print(f"{name:<44} {value:9,.0f}", flush=True)
            else:
                print(f"{name:<44} {per_line(run):6.2f}", flush=True)


if __name__ == "__main__":
    main()
