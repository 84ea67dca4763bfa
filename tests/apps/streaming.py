"""The streamed response the test apps serve: two parts 50 ms apart, so first byte and end differ."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse


def two_parts() -> StreamingResponse:
    """``first `` at once, ``second`` 50 ms later, as ``text/plain``."""

    async def parts() -> AsyncIterator[bytes]:
        yield b"first "
        await asyncio.sleep(0.05)
        yield b"second"

    return StreamingResponse(parts(), media_type="text/plain")
