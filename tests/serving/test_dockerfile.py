"""The Dockerfile: lint clean, hardened, and its command serves the demo (run without a Docker engine)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.dist.pins import write_pins
from tests.servers import ROOT, Background, free_port, wait_for_port, which
from tests.serving.processes import json_lines

DOCKERFILE = ROOT / "Dockerfile"

pytestmark = pytest.mark.slow


@dataclass
class Stage:
    """The instructions of one build stage that matter at run time."""

    base: str
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str = ""
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    expose: list[str] = field(default_factory=list)
    run: list[str] = field(default_factory=list)
    copies: list[str] = field(default_factory=list)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#")))
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            found.append((keyword.upper(), args.strip()))
    return found


def stages(text: str) -> list[Stage]:
    result: list[Stage] = []
    for keyword, args in instructions(text):
        if keyword == "FROM":
            result.append(Stage(base=args.split()[0]))
            continue
        stage = result[-1]
        if keyword == "ENV":
            stage.env.update(dict(pair.split("=", 1) for pair in shlex.split(args)))
        elif keyword == "WORKDIR":
            stage.workdir = args
        elif keyword == "USER":
            stage.user = args
        elif keyword in ("ENTRYPOINT", "CMD"):
            setattr(stage, keyword.lower(), json.loads(args))
        elif keyword == "HEALTHCHECK":
            stage.healthcheck = json.loads(args[args.index("CMD") + 3 :])
        elif keyword == "EXPOSE":
            stage.expose += args.split()
        elif keyword == "RUN":
            stage.run.append(args)
        elif keyword == "COPY":
            stage.copies.append(args)
    return result


def final_stage() -> Stage:
    return stages(DOCKERFILE.read_text())[-1]


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """/opt/venv as the build stage makes it, without Docker: its COPY and RUN steps run here.

    /src, /opt/venv and /wheels are temporary folders, the image's python is this interpreter, and
    pip uses its cache and the tests' own versions. The step installing Debian packages (the C
    compiler) is left out: this machine's own compiler stands in.
    """
    stage = stages(DOCKERFILE.read_text())[0]
    root = tmp_path_factory.mktemp("image")
    src, venv, wheels, bin_dir = root / "src", root / "venv", root / "wheels", root / "bin"
    for directory in (src, bin_dir):
        directory.mkdir()
    for copy in stage.copies:
        *sources, dest = copy.split()
        for source in sources:
            target = src / dest / source if dest.endswith("/") else src / dest
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
            else:
                shutil.copy2(ROOT / source, target)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    (bin_dir / "python").symlink_to(Path(sys.base_prefix) / "bin" / f"python{version}")
    env = {key: value for key, value in stage.env.items() if key != "PIP_NO_CACHE_DIR"}
    env.update(PATH=f"{bin_dir}:{os.environ['PATH']}", PIP_CONSTRAINT=str(write_pins(root / "pins.txt")))
    for run in stage.run:
        if run.startswith("apt-get "):
            continue
        script = run.replace("/opt/venv", str(venv)).replace("/wheels", str(wheels)).replace("--no-cache-dir ", "")
        result = subprocess.run(
            ["bash", "-c", script], cwd=src, env={**os.environ, **env}, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stdout + result.stderr
    return venv / "bin"


class TestLint:
    def test_hadolint_passes(self) -> None:
        """hadolint reports nothing at its default threshold."""
        result = subprocess.run([which("hadolint"), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout == ""

    def test_checkov_passes(self) -> None:
        """checkov's Dockerfile policies all pass."""
        result = subprocess.run(
            [which("checkov"), "-f", str(DOCKERFILE), "--framework", "dockerfile", "--skip-download", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        summary = json.loads(result.stdout)["summary"]
        assert result.returncode == 0, result.stdout
        assert summary["failed"] == 0 and summary["passed"] > 0 and summary["parsing_errors"] == 0


class TestHardening:
    def test_final_stage(self) -> None:
        """Pinned slim base, non-root UID >= 10000, unbuffered, writable paths under /tmp only."""
        stage = final_stage()
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", stage.base)
        assert int(stage.user.split(":")[0]) >= 10000
        assert stage.env["PYTHONUNBUFFERED"] == "1"
        assert stage.env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")
        assert stage.env["HOME"] == stage.env["TMPDIR"] == "/tmp"
        assert stage.expose == [stage.env["PORT"]]
        assert (stage.entrypoint + stage.cmd)[:2] == ["opskit-asgi", "serve"]
        assert stage.healthcheck[:2] == ["python", "-c"] and "/healthz" in stage.healthcheck[2]

    def test_no_compilers_in_final_stage(self) -> None:
        """The final stage installs no packages: only the virtualenv is copied from the build stage."""
        stage = final_stage()
        assert not any(re.search(r"apt-get|apk |gcc|build-essential|pip ", run) for run in stage.run)
        assert any(copy.startswith("--from=build /opt/venv") for copy in stage.copies)

    def test_dockerignore_keeps_only_sources(self) -> None:
        """The build context excludes everything but what the image copies."""
        ignore = (ROOT / ".dockerignore").read_text().split()
        assert ignore[ignore.index("*") :][:1] == ["*"]
        assert {"!pyproject.toml", "!hatch_build.py", "!opskit/", "!examples/"} <= set(ignore)


class TestImageContents:
    def test_build_stage_compiles_the_native_encoder(self, image_venv: Path) -> None:
        """The image's opskit carries the compiled OTLP encoders, and the build stage insists on it."""
        assert stages(DOCKERFILE.read_text())[0].env["OPSKIT_BUILD_NATIVE"] == "1"
        out = subprocess.run(
            [str(image_venv / "python"), "-c", "from opskit.otlp.native import NATIVE; print(NATIVE)"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
        )
        assert out.stdout.strip() == "True", out.stderr


class TestContainerCommand:
    def test_image_command_serves_health(self, image_venv: Path, tmp_path: Path) -> None:
        """The build stage's virtualenv runs the image's ENTRYPOINT + CMD, with its ENV and WORKDIR contents:
        the demo serves /healthz and its API; HEALTHCHECK passes."""
        stage = final_stage()
        venv_bin = str(image_venv)
        env = {key: value.replace("/opt/venv/bin", venv_bin) for key, value in stage.env.items()}
        env["PATH"] = env["PATH"].replace("$PATH", os.environ["PATH"])
        port = free_port()
        # What differs from a container: a free port on loopback and a private metrics directory.
        env.update(
            PORT=str(port), HOST="127.0.0.1", PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"), TMPDIR=str(tmp_path)
        )
        workdir = tmp_path / "app"
        shutil.copytree(ROOT / "examples", workdir / "examples", ignore=shutil.ignore_patterns("__pycache__"))
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSKIT_", "PROMETHEUS_"))}
        full_env.update(env)

        process = Background(stage.entrypoint + stage.cmd, env=full_env, cwd=workdir)
        try:
            wait_for_port(port, timeout=30)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
                assert response.status == 200
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/items/1", timeout=10) as response:
                assert json.loads(response.read()) == {"id": 1, "name": "kettle"}
            check = subprocess.run(stage.healthcheck, env=full_env, cwd=workdir, timeout=30, capture_output=True)
            assert check.returncode == 0, check.stderr
            stopped = {**full_env, "PORT": str(free_port())}
            assert subprocess.run(stage.healthcheck, env=stopped, timeout=30, capture_output=True).returncode != 0
            assert process.stop(signal.SIGTERM, timeout=30) == 0
            assert json_lines(process.stdout()) and json_lines(process.stderr()) == []
        finally:
            process.close()
