"""The direct OTLP encoder writes exactly what the SDK's encoder writes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from opskit.otlp import native
from opskit.tracing import otlp
from opskit.tracing.otlp import RequestSpanEncoder
from opskit.tracing.pipeline import SCOPE
from tests.tracing.receiver import attributes

RESOURCE = Resource({"service.name": "shop", "k8s.pod.name": "shop-1", "build": 7}, schema_url="https://x/1")
REMOTE = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1), trace_state=TraceState([("a", "1")]))


def request_span(i: int, **overrides: object) -> ReadableSpan:
    fields: dict[str, object] = {
        "name": "GET /items/{item_id}",
        "context": SpanContext(0x1234 + i, 0x99 + i, False, TraceFlags(1)),
        "parent": None,
        "resource": RESOURCE,
        "attributes": {"http.request.method": "GET", "url.path": f"/items/{i}", "http.response.status_code": 200},
        "kind": SpanKind.SERVER,
        "instrumentation_scope": SCOPE,
        "start_time": 1_700_000_000_000_000_000 + i,
        "end_time": 1_700_000_000_500_000_000 + i,
    }
    fields.update(overrides)
    return ReadableSpan(**fields)  # type: ignore[arg-type]


def decoded(data: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    request.ParseFromString(data)
    return request


@pytest.fixture(params=["native", "python"], autouse=True)
def encoder_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Every test runs with the compiled span encoder and with the Python one."""
    if request.param == "native":
        if native.span is None:
            pytest.skip("built with OPSKIT_BUILD_NATIVE=0")
    else:
        monkeypatch.setattr(otlp, "native_span", None)
    yield request.param


class TestRequestSpanEncoder:
    def test_request_spans_decode_to_the_sdk_encoding(self) -> None:
        """Every field a request span can carry decodes to the same message as the SDK's encoding."""
        spans = [
            request_span(0),
            request_span(1, parent=REMOTE, context=SpanContext(0xABC, 0x5, False, TraceFlags(1), REMOTE.trace_state)),
            request_span(
                2,
                status=Status(StatusCode.ERROR, "RuntimeError: kaput ü"),
                events=[
                    Event(
                        "exception", {"exception.type": "RuntimeError", "exception.message": "kaput"}, 1_700_000_000_1
                    )
                ],
            ),
            request_span(
                3,
                attributes={
                    "flag": True,
                    "ratio": 0.25,
                    "negative": -42,
                    "big": 2**62,
                    "tags": ("a", "b"),
                    "numbers": (1, 2, 3),
                    "unicode": "naïve ☃",
                    "empty": "",
                    "long": "x" * 20000,
                },
                kind=SpanKind.INTERNAL,
                name="",
            ),
            request_span(4, parent=SpanContext(0x1238, 0x77, is_remote=False)),
        ]
        encoder = RequestSpanEncoder(SCOPE)
        assert decoded(encoder.encode(spans)) == encode_spans(spans)
        assert decoded(encoder.encode(spans)) == encode_spans(spans)  # again, from the caches

    def test_cached_pairs_keep_their_types(self) -> None:
        """Equal-looking attribute values of different types, repeated across spans, decode as their own type."""
        values: list[Any] = ["1", 1, True, 1.0]
        spans = [request_span(n, attributes={"n": value}) for n, value in enumerate(values * 2)]
        encoder = RequestSpanEncoder(SCOPE)
        for _ in range(2):
            request = decoded(encoder.encode(spans))
            found = [
                attributes(span.attributes)["n"]
                for resource_spans in request.resource_spans
                for scope_spans in resource_spans.scope_spans
                for span in scope_spans.spans
            ]
            assert [(type(v), v) for v in found] == [(type(v), v) for v in values * 2]

    def test_spans_of_two_resources_keep_their_own(self) -> None:
        """Spans are grouped by their resource (by identity); each group carries its own resource."""
        first, second = Resource({"service.name": "a"}), Resource({"service.name": "b"})
        spans = [request_span(n, resource=resource) for n, resource in enumerate((first, second, first, second))]
        encoder = RequestSpanEncoder(SCOPE)
        for _ in range(2):
            request = decoded(encoder.encode(spans))
            names = {
                attributes(rs.resource.attributes)["service.name"]: [
                    s.span_id.hex() for ss in rs.scope_spans for s in ss.spans
                ]
                for rs in request.resource_spans
            }
            ids = [f"{0x99 + n:016x}" for n in range(4)]
            assert names == {"a": [ids[0], ids[2]], "b": [ids[1], ids[3]]}

    def test_other_spans_go_through_the_sdk_encoder(self) -> None:
        """Spans of other scopes or with links are encoded by the SDK and merged into the same request."""
        other = request_span(
            9, instrumentation_scope=InstrumentationScope("user.code", "1.0"), kind=SpanKind.CLIENT, name="call"
        )
        linked = request_span(10, links=[Link(REMOTE, {"why": "batch"})])
        ours = request_span(11)
        request = decoded(RequestSpanEncoder(SCOPE).encode([other, ours, linked]))
        names = sorted(
            (scope_spans.scope.name, span.name, span.span_id.hex())
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        )
        assert names == sorted(
            [
                ("user.code", "call", f"{0x99 + 9:016x}"),
                ("opskit.tracing", "GET /items/{item_id}", f"{0x99 + 10:016x}"),
                ("opskit.tracing", "GET /items/{item_id}", f"{0x99 + 11:016x}"),
            ]
        )
        [linked_span] = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans if s.links]
        assert linked_span.links[0].span_id.hex() == f"{0xDEF:016x}"

    def test_same_pair_on_span_and_event_keeps_each_field(self) -> None:
        """A key/value pair cached as a span attribute is not reused, mistagged, for an event's attribute."""
        spans = [
            request_span(i, attributes={"k": "v"}, events=[Event("e", {"k": "v"}, 5)] if i else []) for i in range(2)
        ]
        assert decoded(RequestSpanEncoder(SCOPE).encode(spans)) == encode_spans(spans)

    def test_bool_and_int_attributes_are_not_confused_by_the_cache(self) -> None:
        """Equal-comparing values of different types (True, 1, 1.0) keep their own encodings."""
        spans = [request_span(i, attributes={"v": value}) for i, value in enumerate([1, True, 1.0, 1, True])]
        assert decoded(RequestSpanEncoder(SCOPE).encode(spans)) == encode_spans(spans)

    def test_lone_surrogates_become_replacement_marks(self) -> None:
        """Text with a lone surrogate (a user attribute, an exception message) is still valid UTF-8
        on the wire: a collector would refuse the whole batch otherwise."""
        span = request_span(
            0,
            name="GET \udc80",
            attributes={"note": "a\ud800b", "tags": ("x\udfff",)},
            events=[Event("e\ud800", {"k": "\udc80"}, 5)],
        )
        found = decoded(RequestSpanEncoder(SCOPE).encode([span])).resource_spans[0].scope_spans[0].spans[0]
        assert found.name == "GET ?"
        assert attributes(found.attributes)["note"] == "a?b"
        assert [v.string_value for v in found.attributes[-1].value.array_value.values] == ["x?"]
        assert found.events[0].name == "e?"


class TestCompiledEncoder:
    def test_spans_of_the_sdk_encode_alike(self, encoder_kind: str) -> None:
        """Spans as the SDK makes them (bounded attributes, remote and local parents, error statuses,
        every attribute kind) decode to the SDK's encoding; the compiled encoder takes each of them."""
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from opentelemetry.trace import NonRecordingSpan, set_span_in_context

        exporter = InMemorySpanExporter()
        provider = TracerProvider(resource=RESOURCE)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer(SCOPE.name, SCOPE.version)
        sampled = TraceFlags(1)
        parents = [None, SpanContext(0xABC, 0xDEF, True, sampled), SpanContext(0xABC, 0x5, False, sampled)]
        values: list[Any] = [
            "GET",
            "",
            "naïve ☃" * 30,
            200,
            -7,
            2**63 - 1,
            0.25,
            float("nan"),
            True,
            ("a", "b"),
            (1, 2),
        ]
        for n in range(60):
            parent = parents[n % 3]
            context = set_span_in_context(NonRecordingSpan(parent)) if parent is not None else None
            span = tracer.start_span(f"GET /r/{n % 4}", context=context, kind=SpanKind(n % 5))
            for k in range(n % 9):
                span.set_attribute(f"k{k}", values[(n + k) % len(values)])
            if n % 4 == 1:
                span.set_status(Status(StatusCode.ERROR, "RuntimeError: kaput" if n % 8 == 1 else None))
            elif n % 4 == 2:
                span.set_status(Status(StatusCode.OK))
            span.end()
        spans = list(exporter.get_finished_spans())
        assert len(spans) == 60
        if encoder_kind == "native":
            assert native.span is not None and all(native.span(span) is not None for span in spans)
        ours = decoded(RequestSpanEncoder(SCOPE).encode(spans))
        theirs = encode_spans(spans)
        # NaN never equals itself: compare the bytes of each message instead.
        assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(deterministic=True)

    def test_what_it_declines_the_python_encoder_writes(self, encoder_kind: str) -> None:
        """A trace state, events, values of other kinds: declined whole, then encoded in Python."""
        if encoder_kind != "native":
            pytest.skip("the compiled encoder's own refusals")
        assert native.span is not None
        declined = [
            request_span(0, context=SpanContext(0x1, 0x2, False, TraceFlags(1), TraceState([("a", "1")]))),
            request_span(1, events=[Event("e", {}, 5)]),
            request_span(3, attributes={"nested": (("a",),)}),
            request_span(4, attributes={"text": type("Text", (str,), {})("x")}),
        ]
        # Neither of these two has an encoding the SDK would agree with: only the refusal is checked.
        for span in [*declined, request_span(5, name="\ud800"), request_span(2, attributes={"big": 2**64})]:
            assert native.span(span) is None
        taken = request_span(6)
        assert native.span(taken) is not None
        assert decoded(RequestSpanEncoder(SCOPE).encode([*declined, taken])) == encode_spans([*declined, taken])
