"""Lazy lookup of functions from opskit features that may be disabled or absent."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def optional_function(module: str, name: str) -> Callable[..., Any] | None:
    """``module.name`` if that module imports and defines a callable ``name``, else None."""
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    return found if callable(found) else None
