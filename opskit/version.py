"""The version of the installed distribution (``opskit-asgi``): the one place it is read."""

from __future__ import annotations

from importlib import metadata

__all__ = ["DISTRIBUTION", "VERSION"]

DISTRIBUTION = "opskit-asgi"

try:
    VERSION = metadata.version(DISTRIBUTION)
except metadata.PackageNotFoundError:  # a source tree that was never installed
    VERSION = "0+unknown"
