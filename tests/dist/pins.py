"""Pins of the distributions the tests run with: new virtualenvs resolve to what pip already has."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

DIST = "opskit-asgi"


def canonical(name: str) -> str:
    """A distribution name as the package index compares it (``Opskit_ASGI`` is ``opskit-asgi``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def write_pins(path: Path, *extra: str) -> Path:
    """A constraints file: ``extra`` lines, then ``name==version`` of every installed distribution but opskit-asgi.

    A virtualenv made with it takes seconds and never picks up a release made since the tests' own.
    """
    pins = {
        f"{dist.metadata['Name']}=={dist.version}"
        for dist in importlib.metadata.distributions()
        if dist.metadata["Name"] and canonical(dist.metadata["Name"]) != DIST
    }
    path.write_text("\n".join([*extra, *sorted(pins)]) + "\n")
    return path
