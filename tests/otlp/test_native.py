"""The compiled encoders are part of the development install."""

from __future__ import annotations

import os

import pytest

from opskit.otlp import native


def test_the_native_encoders_are_built() -> None:
    """The development install compiles them (a C compiler is part of the project's set-up); only a
    build told not to (OPSKIT_BUILD_NATIVE=0) runs without them, on the Python encoders."""
    if os.environ.get("OPSKIT_BUILD_NATIVE") == "0":
        pytest.skip("built with OPSKIT_BUILD_NATIVE=0")
    assert native.NATIVE and native.log_record is not None and native.span is not None
