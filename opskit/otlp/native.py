"""opskit's compiled OTLP encoders (``_native.c``), when the install built them; ``None`` otherwise.

Each writes a message in protobuf wire format, or returns ``None`` for what it leaves to its Python
counterpart, which stays the reference: :func:`log_record` (see :mod:`opskit.logging.record`) and
:func:`span` (see :mod:`opskit.tracing.otlp`). ``OPSKIT_BUILD_NATIVE`` decides at build time
whether they are compiled (see ``hatch_build.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["NATIVE", "log_record", "span"]

log_record: Callable[[int, dict[str, Any]], bytes | None] | None
span: Callable[[Any], bytes | None] | None
try:
    from ._native import log_record, span
except ImportError:  # built without a C compiler, or with OPSKIT_BUILD_NATIVE=0
    log_record = span = None

#: Whether the compiled encoders are in use.
NATIVE = log_record is not None
