"""`opskit serve` with a bad value stops before gunicorn starts: exit 2, one JSON line naming the variable."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.servers import ROOT
from tests.serving.processes import OPSKIT

BAD_VALUES = [
    ("OPSKIT_REDIS_URL", "redis+sentinel://127.0.0.1:26379"),
    ("OPSKIT_REDIS_URL", "redis://127.0.0.1:notaport/0"),
    ("OPSKIT_REDIS_URL", "redis://127.0.0.1:6379/0?no_such_option=1"),
    ("OPSKIT_REDIS_URL", "redis+cluster://127.0.0.1:7000/1"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:43l8"),
    ("BIND", "0.0.0.0:http"),
    ("OPSKIT_RATE_LIMIT", "10/fortnight"),
    ("PROMETHEUS_MULTIPROC_DIR", "/proc/opskit-metrics"),
    ("PROMETHEUS_MULTIPROC_DIR", "/etc/hostname"),
    ("OTEL_PROPAGATORS", "bogus"),
    ("OTEL_PROPAGATORS", "TraceContext"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("variable", "value"), BAD_VALUES, ids=[f"{v}={x}" for v, x in BAD_VALUES])
def test_bad_value_exits_2_with_one_line(variable: str, value: str) -> None:
    """The command exits 2 with one JSON line naming the variable and the value; no gunicorn line precedes it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSKIT_", "OTEL_", "PROMETHEUS_"))}
    env.update({variable: value, "PORT": "0", "WEB_CONCURRENCY": "1"})
    result = subprocess.run(
        [OPSKIT, "serve", "tests.serving.asgi_apps:instrumented"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = (result.stdout + result.stderr).splitlines()
    assert result.returncode == 2, lines
    assert len(lines) == 1, lines
    record = json.loads(lines[0])
    assert record["level"] == "critical"
    assert f"{variable}={value!r}" in record["event"]
