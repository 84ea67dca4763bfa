"""gunicorn's settings derived from opskit's: one function used by `opskit serve` and gunicorn_conf."""

from __future__ import annotations

from typing import Any

from ..runtime import Runtime
from ..settings import Settings
from .hooks import ServerHooks
from .sizing import worker_count

__all__ = ["LOGGER_CLASS", "WORKER_CLASS", "bind_addresses", "forwarded_allow_ips", "gunicorn_options"]

WORKER_CLASS = "opskit.serving.worker.UvicornWorker"
LOGGER_CLASS = "opskit.serving.glogging.GunicornLogger"


def bind_addresses(settings: Settings) -> list[str]:
    """``BIND`` when set, else ``HOST:PORT`` (IPv6 hosts in brackets)."""
    if settings.bind:
        return list(settings.bind)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return [f"{host}:{settings.port}"]


def forwarded_allow_ips(settings: Settings) -> list[str]:
    """Peers whose proxy headers uvicorn applies: ``FORWARDED_ALLOW_IPS``, else the trusted proxies."""
    if settings.forwarded_allow_ips is not None:
        return list(settings.forwarded_allow_ips)
    return list(settings.trusted_proxies)


def gunicorn_options(runtime: Runtime) -> dict[str, Any]:
    """Every gunicorn setting opskit chooses for ``runtime``, keyed by gunicorn's setting names.

    The server hooks are bound to ``runtime``: the master and its workers never read the
    environment again.
    """
    settings = runtime.settings
    hooks = ServerHooks(runtime)
    return {
        "bind": bind_addresses(settings),
        "workers": worker_count(settings).workers,
        "worker_class": WORKER_CLASS,
        "timeout": settings.timeout,
        "graceful_timeout": settings.graceful_timeout,
        "keepalive": settings.keep_alive,
        "max_requests": settings.max_requests,
        "max_requests_jitter": settings.max_requests_jitter,
        # gunicorn's own default trusts 127.0.0.1; opskit trusts nobody unless told.
        "forwarded_allow_ips": ",".join(forwarded_allow_ips(settings)) or "",
        "loglevel": settings.log_level,
        "logger_class": LOGGER_CLASS,
        "errorlog": "-",
        "accesslog": None,  # opskit writes the access log
        "proc_name": settings.service_name,
        # The control socket would be created under $HOME, which is read-only in the image.
        "control_socket_disable": True,
        **hooks.as_options(),
    }
