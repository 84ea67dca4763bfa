"""The `opskit` command: `config` reports values and sources, `serve --dev` reloads, errors name variables."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import opskit
from opskit.cli import main
from opskit.serving.report import _redact, _show
from tests.servers import ROOT, SCRIPTS, Background, free_port, wait_for_port
from tests.serving.processes import OPSKIT, wait_until


def config_rows(output: str) -> dict[str, tuple[str, str]]:
    rows = {}
    for line in output.splitlines():
        name, value, source = line.split()[0], " ".join(line.split()[1:-1]), line.split()[-1]
        rows[name] = (value, source)
    return rows


class TestConfig:
    def test_values_and_sources(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
        """Each variable is listed with its value and where it came from: default, the variable set, or override."""
        monkeypatch.setenv("OPSKIT_WEB_CONCURRENCY", "3")
        monkeypatch.setenv("LOG_LEVEL", "warning")
        assert main(["config", "--port", "9100"]) == 0
        rows = config_rows(capsys.readouterr().out)
        assert rows["WEB_CONCURRENCY"] == ("3", "OPSKIT_WEB_CONCURRENCY")
        assert rows["OPSKIT_LOG_LEVEL"] == ("warning", "LOG_LEVEL")
        assert rows["PORT"] == ("9100", "override")
        assert rows["GRACEFUL_TIMEOUT"] == ("30", "default")
        assert rows["workers"][0].startswith("3 ")
        assert rows["bind"] == ("0.0.0.0:9100", "derived")

    def test_invalid_value_names_variable(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A bad value exits 2 with a message naming the variable."""
        monkeypatch.setenv("KEEP_ALIVE", "long")
        assert main(["config"]) == 2
        assert "KEEP_ALIVE='long'" in capsys.readouterr().err

    def test_secrets_are_not_printed(self) -> None:
        """Passwords in URLs and secret-named fields are redacted in the report."""
        assert _redact("redis_url", "redis://app:hunter2@redis:6379/0") == "redis://app:[REDACTED]@redis:6379/0"
        assert _redact("otlp_traces_headers", "authorization=Bearer x") == "[REDACTED]"
        assert _redact("service_name", "checkout") == "checkout"

    def test_number_lists_are_shown(self) -> None:
        """Tuple settings of numbers (histogram buckets) print like the comma-separated variable."""
        assert _show((0.1, 1.0, 10.0)) == "0.1,1.0,10.0"
        assert _show(()) == "(empty)"

    def test_python_dash_m(self) -> None:
        """`python -m opskit config` is the same command."""
        result = subprocess.run(
            [sys.executable, "-m", "opskit", "config"], capture_output=True, text=True, timeout=60, check=True
        )
        assert "WEB_CONCURRENCY" in result.stdout

    def test_version_from_package_metadata(self) -> None:
        """`opskit-asgi --version`, its `opskit` alias and `python -m opskit --version` print the installed version."""
        expected = f"opskit-asgi {importlib.metadata.version('opskit-asgi')}\n"
        assert opskit.__version__ == importlib.metadata.version("opskit-asgi")
        for argv in ([OPSKIT], [str(SCRIPTS / "opskit")], [sys.executable, "-m", "opskit"]):
            result = subprocess.run([*argv, "--version"], capture_output=True, text=True, timeout=60, check=True)
            assert result.stdout == expected, argv


class TestDevServer:
    def test_dev_serves_and_reloads(self, tmp_path: Path) -> None:
        """`opskit serve --dev` runs one uvicorn that picks up a code change."""
        module = tmp_path / "devapp.py"
        source = (ROOT / "tests" / "serving" / "dev_app.txt").read_text()
        module.write_text(source.replace("BODY", "one"))
        port = free_port()
        # Polling: inotify instances are a per-user limit that other processes on the machine may exhaust.
        env = {"PORT": str(port), "WATCHFILES_FORCE_POLLING": "true"}
        process = Background([OPSKIT, "serve", "--dev", "devapp:app"], env=env, cwd=tmp_path)
        try:
            wait_for_port(port, timeout=30)
            assert _body(port) == "one"
            changed = source.replace("BODY", "changed")  # another length: a stale .pyc cannot match

            written = [0.0]

            def reloaded() -> bool:
                # Written again every second: the watcher may start only after the first write.
                if time.monotonic() - written[0] > 1.0:
                    module.write_text(changed)
                    written[0] = time.monotonic()
                return _body(port) == "changed"

            try:
                wait_until(reloaded, timeout=30, what="the reload")
            except AssertionError as exc:
                raise AssertionError(
                    f"{exc}; server output:\n{process.stdout()[-3000:]}\n{process.stderr()[-3000:]}"
                ) from None
        finally:
            process.close()


def _body(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""
