"""OTLP logs: every line the process writes reaches a real receiver as a log record; bounded, counted."""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

import opskit
from opskit.logging.otlp import OtlpLogs, OtlpLogsComponent, create_component
from opskit.logging.record import encode_record
from opskit.logging.writer import WRITER, write_json
from opskit.metrics.registry import Registry
from opskit.otlp import transport
from opskit.runtime import Runtime
from opskit.settings import ConfigError, Settings, load_settings
from tests.servers import free_port
from tests.tracing.receiver import OtlpReceiver, attributes, otlp_receiver

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


@pytest.fixture(autouse=True)
def _untapped_writer() -> Iterator[None]:
    yield
    WRITER.tap = None
    WRITER.stdout = True


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as r:
        yield r


def _records(receiver: OtlpReceiver) -> list[tuple[dict[str, Any], LogRecord]]:
    return [
        (attributes(rl.resource.attributes), record)
        for request in receiver.logs()
        for rl in request.resource_logs
        for sl in rl.scope_logs
        for record in sl.log_records
    ]


def _serve_logs(settings: Settings) -> tuple[OtlpLogsComponent, io.BytesIO]:
    stream = io.BytesIO()
    opskit.configure_logging(settings, stream=stream)
    component = create_component(Runtime(settings))
    assert component is not None
    return component, stream


def _counter(registry: Registry, name: str) -> dict[str, float]:
    for metric, series in registry.collect():
        if metric.name == name:
            return {(s.labels[0] if s.labels else ""): s.data.values[0] for s in series if s.data.values[0]}
    return {}


class TestRecords:
    def test_app_library_and_access_lines_become_records(self, receiver: OtlpReceiver) -> None:
        """structlog, stdlib and the access log's direct lines: severity, body, attributes, trace context;
        stdout keeps every line."""
        settings = load_settings(logs_exporter="otlp", otlp_endpoint=receiver.endpoint, service_name="shop")
        component, stream = _serve_logs(settings)
        component.process_started()
        opskit.get_logger("shop.orders").info("paid", amount=3)
        logging.getLogger("somelib.db").error("slow query %s ms", 120)
        write_json({"event": "request", "level": "info", "path": "/a", "trace_id": TRACE, "span_id": SPAN})
        component._stop()

        records = _records(receiver)
        assert len(records) == 3
        resource, paid = records[0]
        assert resource["service.name"] == "shop" and resource["service.instance.id"]
        assert (paid.severity_number, paid.severity_text, paid.body.string_value) == (9, "INFO", "paid")
        assert attributes(paid.attributes)["amount"] == 3
        assert attributes(paid.attributes)["logger"] == "shop.orders"
        assert paid.time_unix_nano > 0 and paid.trace_id == b""
        _, slow = records[1]
        assert (slow.severity_number, slow.body.string_value) == (17, "slow query 120 ms")
        _, access = records[2]
        assert (access.trace_id.hex(), access.span_id.hex()) == (TRACE, SPAN)
        assert attributes(access.attributes)["path"] == "/a"
        assert "trace_id" not in attributes(access.attributes)
        written = [orjson.loads(line)["event"] for line in stream.getvalue().splitlines()]
        assert written == ["paid", "slow query 120 ms", "request"]

    @pytest.mark.parametrize("stdout", [True, False], ids=["stdout", "otlp-only"])
    def test_each_line_is_one_record_whichever_path_it_takes(self, receiver: OtlpReceiver, stdout: bool) -> None:
        """Lines the native encoder takes before rendering (structlog's, the access log's, warnings
        too) and lines it declines (a nested value, rendered and parsed instead) are each one record
        and, with stdout on, one line."""
        settings = load_settings(logs_exporter="otlp", otlp_endpoint=receiver.endpoint, log_stdout=stdout)
        component, stream = _serve_logs(settings)
        component.process_started()
        log = opskit.get_logger("shop")
        log.info("plain", n=1)
        log.warning("urgent", n=2)
        log.info("nested", n={"deep": [1, 2]})
        write_json({"event": "access", "level": "info", "n": 4})
        write_json({"event": "access-nested", "level": "info", "n": [4]})
        component._stop()
        events = ["plain", "urgent", "nested", "access", "access-nested"]
        assert [r.body.string_value for _, r in _records(receiver)] == events
        written = [orjson.loads(line)["event"] for line in stream.getvalue().splitlines()]
        assert written == (events if stdout else [])

    def test_stdout_can_be_switched_off(self, receiver: OtlpReceiver) -> None:
        """OPSKIT_LOG_STDOUT=false: lines go over OTLP only; after shutdown stdout takes them again."""
        settings = load_settings(logs_exporter="otlp", otlp_endpoint=receiver.endpoint, log_stdout=False)
        component, stream = _serve_logs(settings)
        component.process_started()
        opskit.get_logger("x").info("only over otlp")
        component._stop()
        opskit.get_logger("x").info("after shutdown")
        assert [r.body.string_value for _, r in _records(receiver)] == ["only over otlp"]
        assert [orjson.loads(line)["event"] for line in stream.getvalue().splitlines()] == ["after shutdown"]

    def test_a_line_that_is_not_json_is_the_body(self) -> None:
        """The console format's lines: the text is the body, no severity guessed."""
        record = LogRecord()
        record.ParseFromString(encode_record(123, b"2026-01-01 [info] hello\n"))
        assert (record.body.string_value, record.severity_number, record.time_unix_nano) == (
            "2026-01-01 [info] hello",
            0,
            123,
        )

    def test_hostile_values_stay_well_formed(self) -> None:
        """Bad trace IDs are left out, integers past int64 stay numbers, deep nesting ends in text."""
        deep: Any = "leaf"
        for _ in range(20):
            deep = {"k": deep}
        line = orjson.dumps({"event": 1, "trace_id": "zz" * 16, "span_id": "0" * 16, "deep": deep})
        line = line[:-1] + b',"big":%d}' % 2**70
        record = LogRecord()
        record.ParseFromString(encode_record(1, line))
        assert record.trace_id == b"" and record.span_id == b""
        assert record.body.int_value == 1
        assert attributes(record.attributes)["big"] == float(2**70)
        nested = record.attributes[0].value
        for _ in range(8):
            nested = nested.kvlist_value.values[0].value
        assert nested.WhichOneof("value") == "string_value"  # the rest of the nesting, as text

    def test_cached_pairs_keep_their_types(self) -> None:
        """Equal-looking values of different types, repeated across lines, each decode as their own type:
        the cache of encoded pairs never answers "1" for 1, True or 1.0."""
        values: list[Any] = ["1", 1, True, 1.0, "1", 1, True, 1.0, None, "true"]
        decoded = []
        for value in values:
            record = LogRecord()
            record.ParseFromString(encode_record(1, orjson.dumps({"level": "info", "event": "e", "n": value})))
            decoded.append(attributes(record.attributes)["n"])
            assert (record.severity_text, record.body.string_value) == ("INFO", "e")
        assert [(type(v), v) for v in decoded] == [(type(v), v) for v in values]

    def test_the_pair_cache_is_bounded(self) -> None:
        """Unique values under a cached key never grow the cache past its bound; each still decodes."""
        from opskit.logging import record as otlp

        for n in range(otlp.CACHE_MAX + 100):
            record = LogRecord()
            record.ParseFromString(encode_record(1, orjson.dumps({"event": "e", "user": f"u{n}"})))
            assert attributes(record.attributes) == {"user": f"u{n}"}
        assert len(otlp._strings) <= otlp.CACHE_MAX


class TestBounds:
    def test_a_full_queue_drops_and_counts(self) -> None:
        """Past OTEL_BLRP_MAX_QUEUE_SIZE, lines are dropped (and counted) instead of waiting for room."""
        registry = Registry(None)
        settings = load_settings(logs_exporter="otlp", blrp_max_queue_size=3)
        exporter = OtlpLogs(settings, registry)
        for i in range(5):
            exporter.queue.put(b'{"event": "%d"}\n' % i)
        assert len(exporter.queue) == 3
        assert _counter(registry, "opskit_log_records_dropped_total") == {"queue_full": 2.0}

    def test_collector_down_drops_the_batch_and_counts(self) -> None:
        """Nothing listens: the batch is lost and counted (export_failed), the failure counted by reason;
        at shutdown the rest is dropped as `shutdown` instead of waiting for more timeouts."""
        registry = Registry(None)
        settings = load_settings(
            logs_exporter="otlp",
            otlp_endpoint=f"http://127.0.0.1:{free_port()}",
            otlp_logs_timeout_ms=300,
            blrp_max_export_batch_size=2,
        )
        exporter = OtlpLogs(settings, registry)
        for i in range(5):
            exporter.queue.put(b'{"event": "%d"}\n' % i)
        exporter.export()
        assert len(exporter.queue) == 3  # the rest waits for the next round
        assert _counter(registry, "opskit_log_records_dropped_total") == {"export_failed": 2.0}
        stop = threading.Event()
        stop.set()
        exporter.export(stop)
        assert _counter(registry, "opskit_log_records_dropped_total") == {"export_failed": 4.0, "shutdown": 1.0}
        assert _counter(registry, "opskit_log_export_failures_total") == {"connection": 2.0}

    def test_a_full_batch_is_sent_before_the_delay(self, receiver: OtlpReceiver) -> None:
        """OTEL_BLRP_MAX_EXPORT_BATCH_SIZE lines waiting wake the export thread (the delay is ten minutes)."""
        settings = load_settings(
            logs_exporter="otlp",
            otlp_endpoint=receiver.endpoint,
            blrp_schedule_delay_ms=600_000,
            blrp_max_export_batch_size=4,
        )
        component, _ = _serve_logs(settings)
        component.process_started()
        try:
            for i in range(4):
                opskit.get_logger("x").info(f"line {i}")
            deadline = time.monotonic() + 10
            while len(_records(receiver)) < 4:
                assert time.monotonic() < deadline, "the full batch was not sent"
                time.sleep(0.02)
        finally:
            component._stop()


class TestSettings:
    def test_off_by_default_and_needs_logging(self) -> None:
        assert create_component(Runtime(load_settings())) is None
        assert create_component(Runtime(load_settings(logs_exporter="otlp", logging_enabled=False))) is None

    def test_bad_values_fail_naming_the_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("OTEL_LOGS_EXPORTER", "kafka")
        with pytest.raises(ConfigError, match="OTEL_LOGS_EXPORTER='kafka'"):
            load_settings()
        monkeypatch.setenv("OTEL_LOGS_EXPORTER", "otlp")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "collector:4318")
        with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"):
            load_settings()

    def test_signal_variables_win_over_generic_ones(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "a=1")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "1500")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "9000")
        settings = load_settings()
        assert (settings.otlp_logs_headers, settings.otlp_logs_timeout_ms) == ("a=1", 1500)

    def test_grpc_without_grpcio_fails_at_startup(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """gRPC without the grpc extra fails when the component is built, naming the variable and the fix."""
        monkeypatch.setattr(transport, "grpc_available", lambda: False)  # grpcio cannot be uninstalled here
        settings = load_settings(logs_exporter="otlp", otlp_logs_protocol="grpc")
        with pytest.raises(ConfigError, match=r"OTEL_EXPORTER_OTLP_LOGS_PROTOCOL='grpc'.*opskit-asgi\[grpc\]"):
            create_component(Runtime(settings))
