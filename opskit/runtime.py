"""The runtime: settings and the services every feature shares, resolved once per process.

``instrument()``, ``wrap()`` and ``opskit serve`` build one :class:`Runtime` from the settings
(the environment plus the caller's overrides) and make it the process's current one. Every
component is constructed from it, the gunicorn hooks receive it, and code that runs without an
instrumented app (a route limit under a bare app, a metric defined at import) asks
:func:`current`, which reads the environment once if nobody built a runtime yet. No other module
reads settings.

Services that belong to a feature (the limiter) are built by that feature on first use and kept
here, so that a route limit and the middleware share one limiter.
"""

from __future__ import annotations

import threading
from typing import Any

from .client_ip import ProxyResolver
from .metrics import REGISTRY
from .metrics.registry import Registry, default_directory
from .routes import RouteTemplates
from .settings import Settings, load_settings

__all__ = ["Runtime", "build_runtime", "current"]


class Runtime:
    """One process's resolved configuration and shared services.

    ``settings`` is the truth for every feature of the process; ``proxies`` decides client
    addresses; ``routes`` resolves route templates of the instrumented app; ``registry`` is the
    metrics registry, its directory configured from the settings. ``services`` holds what
    features built from this runtime (``"ratelimit"``: the limiter), see :meth:`service`.
    """

    __slots__ = ("_lock", "_registry", "app", "proxies", "routes", "services", "settings")

    def __init__(self, settings: Settings, app: object = None) -> None:
        self.settings = settings
        self.app = app
        self.proxies = ProxyResolver(settings.trusted_proxies)
        self.routes = RouteTemplates(app, settings.unmatched_route)
        self.services: dict[str, Any] = {}
        self._registry: Registry | None = None
        self._lock = threading.Lock()

    @property
    def registry(self) -> Registry:
        """The process's metrics registry, its directory set from these settings on first use."""
        registry = self._registry
        if registry is None:
            REGISTRY.configure(default_directory(self.settings.prometheus_multiproc_dir))
            registry = self._registry = REGISTRY
        return registry

    def service(self, name: str, build: Any) -> Any:
        """The service ``name`` of this runtime, built by ``build(self)`` on first use."""
        found = self.services.get(name)
        if found is None:
            with self._lock:
                found = self.services.get(name)
                if found is None:
                    found = self.services[name] = build(self)
        return found


_current: Runtime | None = None
_lock = threading.Lock()


def build_runtime(settings: Settings | None = None, /, app: object = None, **overrides: Any) -> Runtime:
    """Resolve the settings (the environment, or ``settings``, with ``overrides``) and make a
    runtime of them the process's current one.

    Raises :class:`opskit.settings.ConfigError` naming the variable of a bad value.
    """
    global _current
    runtime = Runtime(load_settings(settings, **overrides), app)
    with _lock:
        _current = runtime
    return runtime


def current() -> Runtime:
    """The process's runtime: the last one built, else one from the environment (read once)."""
    global _current
    runtime = _current
    if runtime is None:
        with _lock:
            if _current is None:
                _current = Runtime(load_settings())
            runtime = _current
    return runtime
