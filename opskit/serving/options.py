"""gunicorn's settings derived from opskit's: one function used by `opskit serve` and gunicorn_conf."""

from __future__ import annotations

from typing import Any

from ..settings import Settings, load_settings
from .sizing import worker_count

WORKER_CLASS = "opskit.serving.worker.UvicornWorker"
LOGGER_CLASS = "opskit.serving.glogging.GunicornLogger"

_active: Settings | None = None


def use_settings(settings: Settings) -> None:
    """Make ``settings`` the ones the hooks, logger and workers of this process tree use."""
    global _active
    _active = settings


def active_settings() -> Settings:
    """The settings given to :func:`use_settings`, else read from the environment once."""
    global _active
    if _active is None:
        _active = load_settings()
    return _active


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


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    """Every gunicorn setting opskit chooses, keyed by gunicorn's setting names."""
    from . import hooks

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
        "on_starting": hooks.on_starting,
        "when_ready": hooks.when_ready,
        "post_fork": hooks.post_fork,
        "child_exit": hooks.child_exit,
        "worker_exit": hooks.worker_exit,
        "worker_abort": hooks.worker_abort,
        "on_exit": hooks.on_exit,
    }
