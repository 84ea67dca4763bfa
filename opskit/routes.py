"""Route templates (``/items/{item_id}``) of handled requests, without matching twice.

The router records the route it matched in the scope (``scope["route"]`` on Starlette >= 0.41
and FastAPI, ``scope["endpoint"]`` everywhere). A map from those objects to full templates,
mount prefixes included, is built from the app's routes on first use and rebuilt when a route
added later is seen, so a request costs one dict lookup.

Other routers name the template themselves: Litestar sets ``scope["path_template"]``, and a
router may set ``scope["route"]`` to the template text. That is also the hook for any other
framework: a router, or a pure ASGI middleware under opskit, that sets ``scope["path_template"]``
(a template, never the raw path: it becomes a metric label) gets its requests labelled by it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.types import Scope

__all__ = ["RouteTemplates"]


_Map = dict[int, tuple[object, "str | None"]]


def _walk(routes: Iterable[Any], prefix: str, out: _Map) -> None:
    for route in routes:
        path_format = getattr(route, "path_format", None)
        children = getattr(route, "routes", None)
        if children is not None and hasattr(route, "app"):  # Mount (or Host: no path_format)
            mount_format = path_format or ""
            if mount_format.endswith("/{path}"):  # Mount compiles its path with a catch-all
                mount_format = mount_format[: -len("/{path}")]
            sub_prefix = prefix + mount_format.rstrip("/")
            if children:
                # The router leaves the Mount itself in the scope when nothing inside matched.
                out[id(route)] = (route, None)
                _walk(children, sub_prefix, out)
            else:  # a mounted app without routes (StaticFiles, a plain ASGI app)
                out[id(route)] = (route, sub_prefix + "/{path}")
                out.setdefault(id(route.app), (route.app, sub_prefix + "/{path}"))
            continue
        if path_format is None:
            continue
        template = prefix + path_format
        out[id(route)] = (route, template)
        endpoint = getattr(route, "endpoint", None)
        if endpoint is not None:
            out.setdefault(id(endpoint), (endpoint, template))


class RouteTemplates:
    """Resolve the route template of a handled request from what the router left in the scope."""

    __slots__ = ("_app", "_map", "_misses", "unmatched")

    def __init__(self, app: object, unmatched: str = "__unmatched__") -> None:
        self._app = app
        self.unmatched = unmatched
        self._map: _Map = {}
        self._misses = 0

    def rebuild(self) -> None:
        out: _Map = {}
        _walk(getattr(self._app, "routes", None) or (), "", out)
        self._map = out

    def resolve(self, scope: Scope) -> str:
        """The template of the route that handled ``scope``, or the unmatched value."""
        key = scope.get("route") or scope.get("endpoint")
        if key is None:
            return self._named(scope)
        hit = self._map.get(id(key))
        if hit is None or hit[0] is not key:
            hit = self._learn(key)
        return hit[1] or self._named(scope)

    def _named(self, scope: Scope) -> str:
        template = scope.get("path_template")
        return template if type(template) is str and template else self.unmatched

    def _learn(self, key: object) -> tuple[object, str | None]:
        if type(key) is str:  # a router that names its templates itself
            return (key, key)
        # Routes are usually added after instrument(); rebuild, bounded so that objects that are
        # not routes (an endpoint set by a custom router) cannot make every request rebuild.
        if self._misses < 1000:
            self._misses += 1
            self.rebuild()
            hit = self._map.get(id(key))
            if hit is not None and hit[0] is key:
                return hit
        path_format = getattr(key, "path_format", None)
        hit = (key, path_format if isinstance(path_format, str) else None)
        self._map[id(key)] = hit
        return hit
