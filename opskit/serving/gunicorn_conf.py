"""opskit's gunicorn configuration, driven by environment variables.

Use it directly with ``gunicorn -c python:opskit.serving.gunicorn_conf module:app`` (or through
``deploy/gunicorn.conf.py``); ``opskit serve module:app`` applies the same settings. Every value
comes from opskit's settings object: see README's configuration table for the variables.
"""

from __future__ import annotations

import sys

from opskit.runtime import build_runtime
from opskit.serving.logs import fatal_line
from opskit.serving.options import gunicorn_options
from opskit.settings import ConfigError

try:
    _options = gunicorn_options(build_runtime())
except ConfigError as _error:
    # One JSON line naming the variable, instead of gunicorn's "failed to read config" traceback.
    print(fatal_line(str(_error)), file=sys.stderr)
    raise SystemExit(2) from None

bind = _options["bind"]
workers = _options["workers"]
worker_class = _options["worker_class"]
timeout = _options["timeout"]
graceful_timeout = _options["graceful_timeout"]
keepalive = _options["keepalive"]
max_requests = _options["max_requests"]
max_requests_jitter = _options["max_requests_jitter"]
forwarded_allow_ips = _options["forwarded_allow_ips"]
loglevel = _options["loglevel"]
logger_class = _options["logger_class"]
errorlog = _options["errorlog"]
accesslog = _options["accesslog"]
proc_name = _options["proc_name"]
control_socket_disable = _options["control_socket_disable"]

on_starting = _options["on_starting"]
when_ready = _options["when_ready"]
post_fork = _options["post_fork"]
child_exit = _options["child_exit"]
worker_exit = _options["worker_exit"]
worker_abort = _options["worker_abort"]
on_exit = _options["on_exit"]
