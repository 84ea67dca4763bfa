"""JSON logging: one object per line, for structlog and stdlib loggers, with context and redaction."""

from __future__ import annotations

import io
import logging
import threading
from pathlib import Path

import orjson
from starlette.testclient import TestClient

import opskit
from opskit._logging import LineWriter
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
