"""The Makefile's environments: `make demo` installs only what the demo needs, `make test` covers two Pythons.

Read from `make -n` (what make would run), so nothing is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.servers import ROOT

PYENV = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
# What a make running these tests hands down: its flags and its command line's variables.
INHERITED = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "PYTHON", "PYTHONS", "VENV", "PYTEST_ARGS")


def dry_run(*args: str) -> list[str]:
    """The commands ``make -n ARGS`` prints, run as from a shell (no make variables inherited)."""
    make = shutil.which("make")
    assert make is not None
    env = {k: v for k, v in os.environ.items() if k not in INHERITED}
    out = subprocess.run(
        [make, "-n", "--no-print-directory", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


class TestDemo:
    def test_demo_installs_the_package_and_fastapi_only(self, tmp_path: Path) -> None:
        """A new `make demo` installs `.[fastapi]` into its venv: no test or bench extras."""
        commands = dry_run("demo", f"VENV={tmp_path / 'venv'}")
        installs = [c for c in commands if " pip install " in c and "--upgrade pip" not in c]
        assert installs == [f"{tmp_path / 'venv'}/bin/python -m pip install -q -e '.[fastapi]'"]
        assert any(c.endswith("/bin/opskit-asgi serve examples.demo:app") for c in commands)


class TestTest:
    def test_lint_once_pytest_per_python(self) -> None:
        """`make test` lints and type-checks once, and runs pytest in a venv per Python of PYTHONS."""
        pythons = [sorted(PYENV.glob(f"{v}.*/bin/python{v}")) for v in ("3.10", "3.13")]
        if not all(pythons):
            pytest.skip("pyenv's Python 3.10 and 3.13 are not both installed")
        commands = dry_run("test")
        assert sum(c.startswith(".venv-3.10/bin/ruff check") for c in commands) == 1
        assert sum(c.startswith(".venv-3.10/bin/mypy") for c in commands) == 1
        assert [c for c in commands if "/bin/pytest" in c] == [".venv-3.10/bin/pytest ", ".venv-3.13/bin/pytest "]

    def test_python_picks_one_interpreter(self, tmp_path: Path) -> None:
        """`make test PYTHON=...` runs everything on that interpreter alone."""
        python = shutil.which("python3")
        assert python is not None
        commands = dry_run("test", f"PYTHON={python}", f"VENV={tmp_path / 'venv'}")
        assert [c for c in commands if "/bin/pytest" in c] == [f"{tmp_path / 'venv'}/bin/pytest "]
