"""Under real gunicorn (2 workers, --preload): spans from every worker, none lost on SIGTERM."""

from __future__ import annotations

import secrets
import signal
import sys
from pathlib import Path

import httpx
import orjson
import pytest

from tests.servers import Background, listening_socket, wait_for_port
from tests.tracing.receiver import OtlpReceiver

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


@pytest.mark.slow
class TestGunicorn:
    def test_both_workers_export_and_sigterm_flushes(self, receiver: OtlpReceiver, tmp_path: Path) -> None:
        """Pipelines built per worker after fork; SIGTERM exports every finished span; access logs correlate."""
        sock = listening_socket()
        port = sock.getsockname()[1]
        server = Background(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "tests.tracing.served:app",
                "-k",
                "uvicorn_worker.UvicornWorker",
                "-w",
                "2",
                "--preload",
                "-c",
                str(HERE / "gunicorn_conf.py"),
                "--bind",
                f"fd://{sock.fileno()}",
                "--graceful-timeout",
                "10",
            ],
            env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_SERVICE_NAME": "gunicorn-test",
                # Nothing is exported on schedule: every span that arrives was flushed at shutdown.
                "OTEL_BSP_SCHEDULE_DELAY": "600000",
                "PYTHONPATH": str(ROOT),
                "TEST_MASTER_THREADS": str(tmp_path / "master-threads"),
            },
            cwd=ROOT,
            pass_fds=[sock.fileno()],
        )
        sock.close()
        try:
            wait_for_port(port)
            sent: dict[str, int] = {}
            pids: set[int] = set()
            for _ in range(200):
                trace_id = secrets.token_hex(16)
                headers = {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01", "Connection": "close"}
                r = httpx.get(f"http://127.0.0.1:{port}/pid", headers=headers, timeout=10)
                assert r.status_code == 200
                sent[trace_id] = r.json()["pid"]
                pids.add(r.json()["pid"])
                if len(pids) == 2 and len(sent) >= 10:
                    break
            assert len(pids) == 2, "requests never reached the second worker"
            master_threads = (tmp_path / "master-threads").read_text().split()
            assert len(master_threads) == 2  # recorded before each fork
            assert not [name for name in ",".join(master_threads).split(",") if name.startswith("Otel")]
            assert receiver.spans() == []  # still queued in the workers
            server.send_signal(signal.SIGTERM)
            assert server.wait(30) == 0, server.stderr()
            stdout = server.stdout()
        finally:
            server.close()
        spans = receiver.spans()
        lines = [orjson.loads(line) for line in stdout.splitlines() if line.strip()]
        access = {line["trace_id"]: line["span_id"] for line in lines if line.get("path") == "/pid"}
        assert access == {span.trace_id: span.span_id for span in spans}  # logs and spans correlate
        assert {span.trace_id: span.attributes["process.pid"] for span in spans} == sent
        assert len(spans) == len(sent)  # one span per request, none twice
        assert {span.attributes["process.pid"] for span in spans} == pids
        assert all(span.name == "GET /pid" and span.resource["service.name"] == "gunicorn-test" for span in spans)
