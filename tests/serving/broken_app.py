"""An app module that fails at import, for the serving tests."""

from __future__ import annotations

raise RuntimeError("configuration file missing")
