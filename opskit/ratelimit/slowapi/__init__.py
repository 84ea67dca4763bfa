"""slowapi's API on opskit's token bucket: move an app by changing ``slowapi`` to ``opskit.ratelimit.slowapi``
in its imports.

::

    # from slowapi import Limiter, _rate_limit_exceeded_handler
    # from slowapi.errors import RateLimitExceeded
    # from slowapi.util import get_remote_address
    from opskit.ratelimit.slowapi import Limiter, _rate_limit_exceeded_handler
    from opskit.ratelimit.slowapi.errors import RateLimitExceeded
    from opskit.ratelimit.slowapi.util import get_remote_address

    limiter = Limiter(key_func=get_remote_address)
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)

    @app.get("/home")
    @limiter.limit("5/minute")
    async def home(request: Request): ...

The modules mirror slowapi's (``errors``, ``util``, ``middleware``, ``wrappers``), and the names are
also importable from here. Decisions are async (the event loop never blocks on Redis), use the limiter
opskit's middleware installed (Redis when ``OPSKIT_REDIS_URL`` is set) unless ``storage_uri`` names
another store, and follow opskit's failure policy. An option opskit does not support raises
:class:`UnsupportedOption` where the ``Limiter`` is built.
"""

from __future__ import annotations

from .errors import RateLimitExceeded, UnsupportedOption
from .extension import Limiter, RateLimitState, _rate_limit_exceeded_handler
from .middleware import SlowAPIASGIMiddleware, SlowAPIMiddleware
from .util import get_ipaddr, get_remote_address
from .wrappers import Limit

__all__ = [
    "Limit",
    "Limiter",
    "RateLimitExceeded",
    "RateLimitState",
    "SlowAPIASGIMiddleware",
    "SlowAPIMiddleware",
    "UnsupportedOption",
    "_rate_limit_exceeded_handler",
    "get_ipaddr",
    "get_remote_address",
]
