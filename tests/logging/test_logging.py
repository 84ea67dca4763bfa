"""JSON logging: one object per line, for structlog and stdlib loggers, with context and redaction."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from starlette.testclient import TestClient

import opskit
from opskit.logging import writer as opskit_writer
from opskit.logging.writer import LineWriter
from opskit.settings import load_settings
from tests.apps import full
from tests.conftest import LogReader


def configure(**overrides: object) -> io.BytesIO:
    stream = io.BytesIO()
    opskit.configure_logging(load_settings(**overrides), stream=stream)
    return stream


def lines(stream: io.BytesIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


class TestLines:
    def test_structlog_line_has_the_standard_keys(self) -> None:
        """timestamp (ISO-8601 UTC), level, logger, event and service on every line."""
        out = configure(service_name="checkout", environment="prod")
        opskit.get_logger("shop").info("paid", amount=3)
        (line,) = lines(out)
        assert line["event"] == "paid" and line["amount"] == 3
        assert line["level"] == "info" and line["logger"] == "shop"
        assert line["service"] == "checkout" and line["environment"] == "prod"
        assert str(line["timestamp"]).endswith("Z")

    def test_stdlib_loggers_go_through_the_same_chain(self) -> None:
        """A library's logging.getLogger() call comes out as the same JSON shape."""
        out = configure(service_name="svc")
        logging.getLogger("somelib.db").warning("slow query %s ms", 120, extra={"table": "users"})
        (line,) = lines(out)
        assert line["event"] == "slow query 120 ms"
        assert line["logger"] == "somelib.db" and line["level"] == "warning"
        assert line["table"] == "users" and line["service"] == "svc"

    def test_newlines_and_quotes_never_split_a_line(self) -> None:
        """Hostile text in messages, values and keys stays inside one JSON line."""
        out = configure()
        evil = 'line1\nline2\r\n{"forged": true}\u2028"'
        opskit.get_logger("x").info(evil, value=evil, **{evil: 1})
        logging.getLogger("y").error(evil)
        raw = out.getvalue().splitlines()
        assert len(raw) == 2
        assert [orjson.loads(r)["event"] for r in raw] == [evil, evil]

    def test_exceptions_are_structured(self) -> None:
        """Exception info is a JSON structure (type, value, frames), not a multi-line string."""
        out = configure()
        try:
            raise KeyError("missing")
        except KeyError:
            logging.getLogger("z").exception("failed")
        (line,) = lines(out)
        exc = line["exception"]
        assert isinstance(exc, list) and exc[0]["exc_type"] == "KeyError"

    def test_level_filters(self) -> None:
        """OPSKIT_LOG_LEVEL drops lower levels from both paths."""
        out = configure(log_level="warning")
        opskit.get_logger("a").info("hidden")
        logging.getLogger("b").info("hidden")
        logging.getLogger("b").warning("shown")
        assert [line["event"] for line in lines(out)] == ["shown"]

    def test_console_format_is_for_humans(self) -> None:
        """OPSKIT_LOG_FORMAT=console renders readable, non-JSON lines."""
        out = configure(log_format="console")
        logging.getLogger("dev").warning("hello dev")
        text = out.getvalue().decode()
        assert "hello dev" in text and not text.startswith("{")


class TestRedaction:
    def test_sensitive_keys_are_redacted_at_any_depth(self) -> None:
        """Default keys (authorization, cookie, password, token, api_key...) are replaced."""
        out = configure()
        opskit.get_logger("r").info(
            "call",
            password="hunter2",
            headers={"Authorization": "Bearer abc", "accept": "json", "inner": {"Set-Cookie": "s=1"}},
            api_key="k",
            user="ann",
        )
        (line,) = lines(out)
        text = orjson.dumps(line).decode()
        for secret in ("hunter2", "Bearer abc", "s=1", '"k"'):
            assert secret not in text
        assert line["user"] == "ann"
        assert line["headers"] == {
            "Authorization": "[REDACTED]",
            "accept": "json",
            "inner": {"Set-Cookie": "[REDACTED]"},
        }

    def test_stdlib_extra_is_redacted(self) -> None:
        """Redaction applies to stdlib records' extras too."""
        out = configure()
        logging.getLogger("lib").info("login", extra={"token": "t0k"})
        assert lines(out)[0]["token"] == "[REDACTED]"

    def test_keys_are_configurable(self) -> None:
        """OPSKIT_LOG_REDACT_KEYS replaces the list."""
        out = configure(log_redact_keys="ssn")
        opskit.get_logger("r").info("x", ssn="123", password="visible")
        line = lines(out)[0]
        assert line["ssn"] == "[REDACTED]" and line["password"] == "visible"


def test_request_context_on_app_and_library_lines(log_lines: LogReader) -> None:
    """Inside a request, structlog and stdlib lines both carry the request_id."""
    app = full.create()

    @app.get("/mixed")
    async def mixed() -> None:
        opskit.get_logger("app").info("from structlog")
        logging.getLogger("lib").info("from stdlib")

    c = TestClient(app)
    log_lines()
    c.get("/mixed", headers={"X-Request-ID": "mix-1"})
    got = {line["event"]: line.get("request_id") for line in log_lines()}
    assert got["from structlog"] == "mix-1"
    assert got["from stdlib"] == "mix-1"


class TestLineWriter:
    def test_lines_to_a_file_are_whole_ordered_and_unbuffered(self, tmp_path: Path) -> None:
        """Written straight to the descriptor: earlier buffered output first, no line torn by threads."""
        writer = LineWriter()
        with open(tmp_path / "out.log", "wb") as stream:
            stream.write(b"before\n")  # still in the stream's buffer
            writer.use(stream)
            assert writer._fd == stream.fileno()

            def emit(n: int) -> None:
                for i in range(500):
                    writer.msg(orjson.dumps({"thread": n, "i": i, "pad": "x" * 3000}))

            threads = [threading.Thread(target=emit, args=(n,)) for n in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            # Nothing waits in the stream's buffer: the file already holds every line.
            lines = (tmp_path / "out.log").read_bytes().splitlines()
        assert lines[0] == b"before"
        records = [orjson.loads(line) for line in lines[1:]]
        assert len(records) == 2000
        for n in range(4):
            assert [r["i"] for r in records if r["thread"] == n] == list(range(500))

    def test_streams_without_a_descriptor_still_work(self) -> None:
        """In-memory streams (captured output) go through their own write and flush."""
        writer = LineWriter()
        text = io.StringIO()
        writer.use(text)
        writer.msg(b'{"a":1}')
        assert text.getvalue() == '{"a":1}\n'


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    """The shared writer pointed at a real file (a descriptor, as in production), restored after."""
    path = tmp_path / "out.log"
    with open(path, "wb") as stream:
        opskit.configure_logging(load_settings(), stream=stream)
        yield path
        opskit.configure_logging(load_settings(), stream=sys.stdout)


def file_events(path: Path) -> list[str]:
    return [orjson.loads(line)["event"] for line in path.read_bytes().splitlines()]


class TestCoalescedWrites:
    def test_lines_of_one_loop_iteration_are_written_together_at_its_end(self, log_file: Path) -> None:
        """Info lines wait for the end of the iteration, then all of them are there, in order."""
        log = opskit.get_logger("t")

        async def main() -> tuple[list[str], list[str]]:
            for i in range(3):
                log.info(f"line {i}")
            during = file_events(log_file)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            return during, file_events(log_file)

        during, after = asyncio.run(main())
        assert during == []
        assert after == ["line 0", "line 1", "line 2"]

    def test_warnings_and_errors_are_written_at_once_after_what_waits(self, log_file: Path) -> None:
        """An urgent line (structlog or stdlib) takes the gathered info lines with it, in order."""
        log = opskit.get_logger("t")

        async def main() -> list[list[str]]:
            seen = []
            log.info("first")
            log.warning("second")
            seen.append(file_events(log_file))
            log.info("third")
            logging.getLogger("lib").error("fourth")
            seen.append(file_events(log_file))
            return seen

        assert asyncio.run(main()) == [["first", "second"], ["first", "second", "third", "fourth"]]

    def test_lines_from_other_threads_are_written_at_once(self, log_file: Path) -> None:
        """Off the loop's thread nothing is gathered: the line and whatever waited go out together."""
        log = opskit.get_logger("t")

        async def main() -> list[str]:
            log.info("on the loop")
            await asyncio.to_thread(log.info, "in a thread")
            return file_events(log_file)

        assert asyncio.run(main())[:2] == ["on the loop", "in a thread"]

    def test_a_large_burst_is_written_without_waiting(self, log_file: Path) -> None:
        """Past the writer's limit, gathered lines are written before the iteration ends."""
        log = opskit.get_logger("t")

        async def main() -> int:
            for i in range(200):
                log.info("big", i=i, pad="x" * 1000)
            return len(file_events(log_file))

        written = asyncio.run(main())
        assert 0 < written < 200
        assert len(file_events(log_file)) == 200

    def test_off_writes_each_line_at_once(self, tmp_path: Path) -> None:
        """OPSKIT_LOG_COALESCE=false: every line is on its way before the call returns."""
        path = tmp_path / "out.log"
        with open(path, "wb") as stream:
            opskit.configure_logging(load_settings(log_coalesce=False), stream=stream)
            try:

                async def main() -> list[str]:
                    opskit.get_logger("t").info("now")
                    return file_events(path)

                assert asyncio.run(main()) == ["now"]
            finally:
                opskit.configure_logging(load_settings(), stream=sys.stdout)

    def test_a_fork_writes_waiting_lines_once(self, log_file: Path) -> None:
        """Lines gathered before a fork are written by the parent alone, never again by the child."""
        log = opskit.get_logger("t")

        async def main() -> int:
            log.info("before fork")
            pid = os.fork()
            if pid == 0:
                log.info("child")
                opskit_writer.WRITER.flush()
                os._exit(0)
            return pid

        os.waitpid(asyncio.run(main()), 0)
        assert sorted(file_events(log_file)) == ["before fork", "child"]

    def test_lines_left_when_the_loop_closes_are_written_at_exit(self, tmp_path: Path) -> None:
        """A loop closed before its next iteration still loses nothing: the process writes them at exit."""
        script = textwrap.dedent(
            """
            import asyncio
            import opskit

            opskit.configure_logging()

            def last_words():
                opskit.get_logger("t").info("last words")
                loop.stop()  # this iteration is the last: the line's write never gets its turn

            loop = asyncio.new_event_loop()
            loop.call_soon(last_words)
            loop.run_forever()
            loop.close()
            """
        )
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60, check=True)
        assert [orjson.loads(line)["event"] for line in done.stdout.splitlines()] == ["last words"]
