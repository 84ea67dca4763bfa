"""Fixtures of the tracing tests: a real OTLP/HTTP receiver and a clean tracing pipeline."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import opskit.tracing
from tests.tracing.receiver import OtlpReceiver, otlp_receiver


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """An OTLP/HTTP receiver on a free loopback port, decoding with opentelemetry-proto."""
    with otlp_receiver() as r:
        try:
            yield r
        finally:
            opskit.tracing.shutdown()  # flush into the receiver while it still listens


@pytest.fixture(autouse=True)
def _no_pipeline_left() -> Iterator[None]:
    """Each test builds its own pipeline; its export thread is stopped afterwards."""
    opskit.tracing.shutdown()
    yield
    opskit.tracing.shutdown()
