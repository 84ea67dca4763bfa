"""README is true: its configuration table lists exactly the variables the settings object reads."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from opskit.settings import env_vars

ROOT = Path(__file__).resolve().parent.parent


def test_config_table_matches_settings() -> None:
    """Every variable in README's table exists in the settings, and every setting is in the table."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- config-table:begin -->")[1].split("<!-- config-table:end -->")[0]
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", block))
    assert documented == set(env_vars())


def test_config_table_is_generated() -> None:
    """The table is exactly what `make docs` generates (descriptions and defaults included)."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- config-table:begin -->\n")[1].split("\n<!-- config-table:end -->")[0]
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_config_table.py")], capture_output=True, text=True, check=True
    )
    assert block == out.stdout.strip()


def test_ci_runs_the_readme_test_command() -> None:
    """CI calls the very command README gives for the tests."""
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
    assert "make test" in (ROOT / "README.md").read_text()
