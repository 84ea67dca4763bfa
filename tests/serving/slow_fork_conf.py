"""opskit's gunicorn configuration with a slow ``post_fork`` (as a slow exporter start-up would be)."""

from __future__ import annotations

import time
from typing import Any

from opskit.serving.gunicorn_conf import *  # noqa: F403
from opskit.serving.gunicorn_conf import post_fork as _opskit_post_fork


def post_fork(server: Any, worker: Any) -> None:  # type: ignore[no-redef]
    _opskit_post_fork(server, worker)
    time.sleep(1.5)
