"""gunicorn configuration for opskit services: ``gunicorn -c deploy/gunicorn.conf.py module:app``.

It is opskit's shipped configuration (``opskit.serving.gunicorn_conf``), driven by environment
variables (WEB_CONCURRENCY, PORT, TIMEOUT, GRACEFUL_TIMEOUT, ...). ``opskit serve module:app``
runs the same thing; prefer it.
"""

from opskit.serving.gunicorn_conf import *  # noqa: F403
