"""What the event-loop thread is running, read from another thread without stopping it.

``sys._current_frames()`` hands the watchdog the loop thread's innermost frame; its ``f_back`` chain
is the stack of the running coroutines. The frames of the server, the framework and opskit itself
say nothing about the cause, so they are trimmed; what is left, innermost first, is the app's code
(and the libraries it called) at the moment the loop was seen blocked.
"""

from __future__ import annotations

import linecache
import os
import sys
from types import FrameType
from typing import Any, Final

__all__ = ["FRAMEWORK_PACKAGES", "app_frames", "format_frame", "format_stack", "frame_of_thread", "scope_in"]

# Top-level packages whose frames are scaffolding around the app's code: server, framework, opskit.
FRAMEWORK_PACKAGES: Final = frozenset(
    {
        "opskit",
        "asyncio",
        "starlette",
        "fastapi",
        "anyio",
        "uvicorn",
        "uvicorn_worker",
        "gunicorn",
        "uvloop",
        "runpy",
        "selectors",
        "contextlib",
        "threading",
        "concurrent",
        "click",
    }
)
# Packages whose frames hold the request's ASGI ``scope`` as an argument (the router's included).
_SCOPE_HOLDERS: Final = frozenset({"opskit", "starlette", "fastapi"})
_MAX_CODE = 160
_MAX_PATH = 160


def _package(frame: FrameType) -> str:
    name = frame.f_globals.get("__name__")
    return name.partition(".")[0] if isinstance(name, str) else ""


def frame_of_thread(thread_id: int) -> FrameType | None:
    """The frame thread ``thread_id`` is executing now (it keeps running)."""
    return sys._current_frames().get(thread_id)


def app_frames(frame: FrameType | None, depth: int, outermost: FrameType | None = None) -> list[FrameType]:
    """Up to ``depth`` frames from ``frame`` outwards to ``outermost``, framework frames left out.

    ``outermost`` is the frame of the running task's coroutine: what lies beyond it is the event
    loop and the server's start-up, the same for every block.

    When every frame is the framework's (the block is in a server or opskit itself), the innermost
    ``depth`` frames are returned untrimmed: a warning always shows where the loop was.
    """
    kept: list[FrameType] = []
    everything: list[FrameType] = []
    while frame is not None and len(kept) < depth:
        if len(everything) < depth:
            everything.append(frame)
        if _package(frame) not in FRAMEWORK_PACKAGES:
            kept.append(frame)
        if frame is outermost:
            break
        frame = frame.f_back
    return kept or everything


def _short_path(path: str) -> str:
    cwd = os.getcwd() + os.sep
    if path.startswith(cwd):
        path = path[len(cwd) :]
    else:
        marker = "site-packages" + os.sep
        cut = path.rfind(marker)
        if cut >= 0:
            path = path[cut + len(marker) :]
    return _printable(path, _MAX_PATH)


def _printable(text: str, limit: int) -> str:
    """Bounded, one line, control and non-ASCII characters escaped."""
    clipped = text[:limit]
    escaped = clipped.encode("unicode_escape").decode("ascii")
    return escaped + ("..." if len(text) > limit else "")


def format_frame(frame: FrameType) -> str:
    """``path:line in function: source line``, bounded and escaped."""
    code = frame.f_code
    name = getattr(code, "co_qualname", code.co_name)
    line = frame.f_lineno or 0
    source = linecache.getline(code.co_filename, line, frame.f_globals).strip()
    text = f"{_short_path(code.co_filename)}:{line} in {_printable(name, 120)}"
    return f"{text}: {_printable(source, _MAX_CODE)}" if source else text


def format_stack(frame: FrameType | None, depth: int, outermost: FrameType | None = None) -> list[str]:
    """The app's frames of the stack ending in ``frame``, innermost first, one string each."""
    return [format_frame(f) for f in app_frames(frame, depth, outermost)]


def scope_in(frame: FrameType | None) -> dict[str, Any] | None:
    """The ASGI scope of the request whose code runs in ``frame``'s stack, if any.

    The innermost frame of opskit, Starlette or FastAPI taking a ``scope`` argument holds it: the
    router's, whose scope already names the matched route. Only that frame's locals are read.
    """
    while frame is not None:
        code = frame.f_code
        if "scope" in code.co_varnames[: code.co_argcount + code.co_kwonlyargcount] and (
            _package(frame) in _SCOPE_HOLDERS
        ):
            scope = frame.f_locals.get("scope")
            if isinstance(scope, dict) and scope.get("type") in ("http", "websocket"):
                return scope
        frame = frame.f_back
    return None
