"""The access log: one JSON line per finished request, written when its body is complete."""

from __future__ import annotations

from .component import Component
from .exchange import Exchange
from .settings import Settings

__all__ = ["AccessLog"]

_MAX_FIELD = 1024  # a hostile User-Agent or path must not make a line unbounded


def _matcher(patterns: tuple[str, ...]) -> tuple[frozenset[str], tuple[str, ...]]:
    exact = frozenset(p for p in patterns if not p.endswith("*"))
    prefixes = tuple(p[:-1] for p in patterns if p.endswith("*"))
    return exact, prefixes


class AccessLog(Component):
    """Writes the access-log line; replaces uvicorn's and gunicorn's own access logs."""

    def __init__(self, settings: Settings) -> None:
        from ._logging import get_logger

        self._log = get_logger("opskit.access")
        self._exact, self._prefixes = _matcher(settings.access_log_exclude_paths)

    def excluded(self, path: str) -> bool:
        return path in self._exact or (bool(self._prefixes) and path.startswith(self._prefixes))

    def request_finished(self, ex: Exchange) -> None:
        if self.excluded(ex.path):
            return
        ua = ex.header(b"user-agent")
        status = ex.status
        fields = {
            "method": ex.method,
            "route": ex.route,
            "path": ex.path[:_MAX_FIELD],
            "status": status,
            "duration_ms": round(ex.duration * 1000, 3),
            "response_bytes": ex.response_bytes,
            "client": ex.client,
            "user_agent": ua[:_MAX_FIELD].decode("latin-1") if ua is not None else None,
        }
        if ex.rate_limit_policy is not None:
            fields["ratelimit_policy"] = ex.rate_limit_policy
        if status >= 500 or status == 0:
            self._log.error("request", **fields)
        else:
            self._log.info("request", **fields)

    def websocket_closed(self, ex: Exchange) -> None:
        if self.excluded(ex.path):
            return
        self._log.info(
            "websocket",
            route=ex.route,
            path=ex.path[:_MAX_FIELD],
            status=ex.status,
            duration_ms=round(ex.duration * 1000, 3),
            client=ex.client,
        )
