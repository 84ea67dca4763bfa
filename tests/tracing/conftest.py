"""Fixtures of the tracing tests: a real OTLP/HTTP receiver and a clean tracing pipeline."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util._once import Once

import opskit.tracing
from opskit.tracing import lifecycle
from tests.tracing.receiver import OtlpReceiver, otlp_receiver


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """An OTLP/HTTP receiver on a free loopback port, decoding with opentelemetry-proto."""
    with otlp_receiver() as r:
        try:
            yield r
        finally:
            opskit.tracing.shutdown()  # flush into the receiver while it still listens


def _forget_global_provider() -> None:
    # The global tracer provider can be set once per process; tests of other features must not
    # inherit one (FastAPI's native telemetry switches on when it exists), nor a test's propagators.
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    lifecycle._provider_installed = False
    propagate.set_global_textmap(CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()]))


@pytest.fixture(autouse=True)
def _no_pipeline_left() -> Iterator[None]:
    """Each test builds its own pipeline; its export thread is stopped and the global provider forgotten."""
    opskit.tracing.shutdown()
    yield
    opskit.tracing.shutdown()
    _forget_global_provider()
