"""The metrics test app, configured from the environment, for real servers."""

from __future__ import annotations

from opskit.settings import load_settings
from tests.metrics.app import wrapped

app, _metrics = wrapped(load_settings(logging_enabled=False))
