"""slowapi's exceptions: ``RateLimitExceeded`` (a 429) and the error for options opskit does not support."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException

if TYPE_CHECKING:
    from ..rate import Rate
    from .wrappers import Limit

__all__ = ["RateLimitExceeded", "UnsupportedOption"]


class RateLimitExceeded(HTTPException):
    """Raised by a limited endpoint: a 429 whose ``detail`` is the limit (``2 per 1 minute``) or its
    ``error_message``, as in slowapi. ``limit`` is the :class:`~.wrappers.Limit` that refused, ``rate``
    its rate that ran out."""

    limit: Limit | None = None
    #: The shim's ``Limiter`` that refused (its headers go on the 429).
    limiter: Any = None

    def __init__(self, limit: Limit, headers: dict[str, str] | None = None, *, rate: Rate | None = None) -> None:
        self.limit = limit
        message: Any = limit.error_message
        description = str(message() if callable(message) else message) if message else str(rate or limit.limit)
        super().__init__(status_code=429, detail=description, headers=headers)


class UnsupportedOption(ValueError):
    """A slowapi option or value that opskit does not support, raised where the ``Limiter`` or the
    decorator is built (at import of the app), never ignored. The message says what to do instead."""
