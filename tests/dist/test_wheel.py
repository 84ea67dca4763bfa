"""The distribution as users get it: the sdist and the wheel pass twine, and the wheel alone serves apps.

Every virtualenv here is new and holds the wheel and its runtime dependencies only: no editable
install, no test extras. The servers are the installed console command: gunicorn with 2 workers.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.metadata
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from packaging.requirements import Requirement

from tests.dist.pins import DIST, canonical, write_pins
from tests.metrics.parsing import parse_text
from tests.servers import ROOT, Background, free_port, wait_for_port
from tests.serving.processes import children, json_lines, wait_until

pytestmark = pytest.mark.slow

PACKAGE_DATA = ("opskit/py.typed", "opskit/ratelimit/gcra.lua")
README = (ROOT / "README.md").read_text()

STARLETTE_APP = """\
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import opskit
from opskit.ratelimit.slowapi import Limiter, RateLimitExceeded, _rate_limit_exceeded_handler

limiter = Limiter()


@limiter.limit("1/minute")
async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello " + opskit.request_id())


routes = [Route("/hello/{name}", hello)]
app = opskit.wrap(Starlette(routes=routes, exception_handlers={RateLimitExceeded: _rate_limit_exceeded_handler}))
"""


@dataclass(frozen=True)
class Built:
    sdist: Path
    wheel: Path

    @property
    def version(self) -> str:
        return self.wheel.name.split("-")[1]

    def metadata(self) -> Message:
        with zipfile.ZipFile(self.wheel) as whl:
            return HeaderParser().parsestr(whl.read(f"opskit_asgi-{self.version}.dist-info/METADATA").decode())


@dataclass(frozen=True)
class Venv:
    """A new virtualenv; commands run from ``cwd``, a folder outside the source tree."""

    bin: Path
    cwd: Path

    def run(self, *argv: str) -> str:
        return run([str(self.bin / argv[0]), *argv[1:]], cwd=self.cwd).strip()

    def python(self, code: str) -> str:
        return self.run("python", "-c", code)


MakeVenv = Callable[..., Venv]


@dataclass(frozen=True)
class Served:
    process: Background
    url: str

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10)

    def access_line(self, path: str) -> dict[str, Any]:
        """The access-log line of the request to ``path``, once it is on stdout (every line there is JSON)."""
        found: list[dict[str, Any]] = []

        def written() -> bool:
            found[:] = [line for line in json_lines(self.process.stdout()) if line.get("path") == path]
            return bool(found)

        wait_until(written, what=f"the access line of {path}")
        return found[0]

    def requests_counted(self, route: str, status: int) -> float:
        """``http_requests_total`` of GET ``route`` with ``status``, from /metrics in the classic text format."""
        response = self.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        labels = {"method": "GET", "route": route, "status": str(status)}
        found = [
            s.value
            for family in parse_text(response.text)
            for s in family.samples
            if s.name == "http_requests_total" and s.labels == labels
        ]
        return found[0] if found else 0.0

    def wait_counted(self, route: str, status: int, count: int) -> None:
        """Wait until every worker's count of GET ``route`` with ``status`` adds up to ``count``."""
        wait_until(lambda: self.requests_counted(route, status) == count, what=f"{count} x {status} on {route}")


def run(argv: list[str], *, timeout: float = 120, cwd: Path | None = None) -> str:
    """Run a command; fail with its output when it fails."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    assert result.returncode == 0, f"{shlex.join(argv)}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """`python -m build`: the sdist, then the wheel built from that sdist."""
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], timeout=300)
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return Built(sdist, wheel)


@pytest.fixture(scope="module")
def new_venv(built: Built, tmp_path_factory: pytest.TempPathFactory) -> MakeVenv:
    """Make a virtualenv from pip install arguments, the built wheel standing in for the index."""
    directory = tmp_path_factory.mktemp("constraints")
    constraints = write_pins(directory / "constraints.txt", f"{DIST} @ {built.wheel.as_uri()}")

    def make(name: str, *requirements: str) -> Venv:
        path = tmp_path_factory.mktemp(name)
        run([sys.executable, "-m", "venv", "--without-pip", str(path / "venv")])
        pip = [sys.executable, "-m", "pip", "--python", str(path / "venv" / "bin" / "python"), "install", "-q"]
        run([*pip, "--find-links", str(built.wheel.parent), "-c", str(constraints), *requirements], timeout=300)
        (path / "app").mkdir()
        return Venv(path / "venv" / "bin", path / "app")

    return make


@contextlib.contextmanager
def serving(venv: Venv, command: str, app: str) -> Iterator[Served]:
    """``command serve app`` from the virtualenv, on 2 workers and a free loopback port."""
    port = free_port()
    env = {"WEB_CONCURRENCY": "2", "HOST": "127.0.0.1", "PORT": str(port), "TMPDIR": str(venv.cwd), "PYTHONPATH": ""}
    process = Background([str(venv.bin / command), "serve", app], env=env, cwd=venv.cwd)
    try:
        wait_for_port(port, timeout=30)
        wait_until(lambda: len(children(process.pid)) == 2, what="2 workers")
        yield Served(process, f"http://127.0.0.1:{port}")
    finally:
        process.close()


def imported_modules() -> set[str]:
    """Every module name the package's source imports (absolute imports, at any depth)."""
    names: set[str] = set()
    for path in (ROOT / "opskit").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def provided_modules(dist: str) -> set[str]:
    """The modules and packages a distribution installs (namespace packages left out)."""
    files = importlib.metadata.distribution(dist).files or []
    return {
        ".".join(file.parts[:-1] if file.name == "__init__.py" else (*file.parts[:-1], file.stem))
        for file in files
        if file.suffix == ".py"
    }


class TestArchives:
    def test_twine_check_passes(self, built: Built) -> None:
        """The sdist and the wheel pass `twine check --strict` (metadata and README render)."""
        out = run([sys.executable, "-m", "twine", "check", "--strict", str(built.sdist), str(built.wheel)])
        assert out.count("PASSED") == 2

    def test_wheel_holds_package_data_and_both_commands(self, built: Built) -> None:
        """The wheel ships py.typed and the Lua script, and installs `opskit-asgi` and `opskit` for one entry point."""
        with zipfile.ZipFile(built.wheel) as whl:
            names = set(whl.namelist())
            entry_points = whl.read(f"opskit_asgi-{built.version}.dist-info/entry_points.txt").decode()
        assert set(PACKAGE_DATA) <= names
        assert not any(name.startswith(("tests/", "bench/", "examples/")) for name in names)
        assert "opskit-asgi = opskit.cli:main" in entry_points and "opskit = opskit.cli:main" in entry_points
        assert built.metadata()["Name"] == DIST

    def test_wheel_holds_the_native_encoder(self, built: Built) -> None:
        """The wheel carries the compiled OTLP encoders for this interpreter (and so a platform
        tag), not its C source; the sdist carries the source and the hook that compiles it."""
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        with zipfile.ZipFile(built.wheel) as whl:
            names = set(whl.namelist())
            wheel_info = whl.read(f"opskit_asgi-{built.version}.dist-info/WHEEL").decode()
        assert f"opskit/otlp/_native{suffix}" in names and "opskit/otlp/_native.c" not in names
        assert "Root-Is-Purelib: false" in wheel_info
        assert not built.wheel.name.endswith("-py3-none-any.whl")
        with tarfile.open(built.sdist) as sdist:
            names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
        assert {"opskit/otlp/_native.c", "opskit/otlp/_native.pyi", "hatch_build.py"} <= names

    def test_without_a_compiler_the_wheel_is_pure_python(self, built: Built, tmp_path: Path) -> None:
        """No working compiler: the build warns and makes a ``py3-none-any`` wheel (the Python encoder
        serves); with OPSKIT_BUILD_NATIVE=1 the same build fails, naming the variable."""
        broken = {**os.environ, "LDSHARED": str(tmp_path / "no-such-compiler")}
        with tarfile.open(built.sdist) as sdist:
            sdist.extractall(tmp_path / "src", filter="data")
        (source,) = (tmp_path / "src").iterdir()
        result = subprocess.run(
            [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path / "pure"), str(source)],
            capture_output=True,
            text=True,
            timeout=300,
            env=broken,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "the native OTLP encoders were not compiled" in result.stdout + result.stderr
        (wheel,) = (tmp_path / "pure").glob("*.whl")
        assert wheel.name.endswith("-py3-none-any.whl")
        with zipfile.ZipFile(wheel) as whl:
            assert not [name for name in whl.namelist() if "_native" in name and not name.endswith(".pyi")]
        result = subprocess.run(
            [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path / "strict"), str(source)],
            capture_output=True,
            text=True,
            timeout=300,
            env={**broken, "OPSKIT_BUILD_NATIVE": "1"},
        )
        assert result.returncode != 0 and "OPSKIT_BUILD_NATIVE=1" in result.stdout + result.stderr

    def test_sdist_holds_the_package_and_its_data(self, built: Built) -> None:
        """The sdist (which the wheel is built from) has the package data and none of the repository's other trees."""
        with tarfile.open(built.sdist) as sdist:
            names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
        assert set(PACKAGE_DATA) | {"pyproject.toml", "README.md", "CHANGELOG.md"} <= names
        assert not {name.split("/")[0] for name in names} & {"tests", "bench", "helm", "grafana", "deploy"}

    def test_runtime_dependencies_are_what_the_package_imports(self, built: Built) -> None:
        """Each unconditional requirement provides a module the package imports; FastAPI is the `fastapi` extra."""
        requirements = [Requirement(value) for value in built.metadata().get_all("Requires-Dist") or []]
        runtime = [r.name for r in requirements if r.marker is None]
        imported = imported_modules()
        unused = [name for name in runtime if not provided_modules(name) & imported]
        assert unused == []
        assert not {"fastapi", "slowapi", "opentelemetry-instrumentation-asgi"} & {canonical(n) for n in runtime}
        extra = [r for r in requirements if r.marker is not None and r.marker.evaluate({"extra": "fastapi"})]
        assert [canonical(r.name) for r in extra] == ["fastapi"]


class TestQuickstart:
    def test_readme_quickstart_from_the_wheel(self, new_venv: MakeVenv, built: Built) -> None:
        """README's quickstart, word for word in an empty folder: install line, main.py, serve command.

        The app answers with request IDs, health and Prometheus metrics, logs each request as JSON,
        and the example service runs from the same install; the commands report the version.
        """
        quickstart = README.split("## Quickstart\n")[1].split("\n## ")[0]
        install = re.search(r"```console\n(pip install [^\n]+)\n```", quickstart)
        code = re.search(r"```python\n(.*?)```", quickstart, re.DOTALL)
        command = re.search(r"Serve it with `([^`]+)`", quickstart)
        assert install and code and command
        venv = new_venv("quickstart", *shlex.split(install[1])[2:])
        (venv.cwd / "main.py").write_text(code[1])
        shutil.copy(ROOT / "examples" / "demo.py", venv.cwd / "demo.py")

        program, verb, app = shlex.split(command[1])
        assert (program, verb, app) == ("opskit-asgi", "serve", "main:app")
        with serving(venv, program, app) as server:
            assert server.get("/healthz").status_code == 200
            missing = server.get("/items/1")
            assert missing.status_code == 404 and missing.headers["x-request-id"]
            line = server.access_line("/items/1")
            assert (line["status"], line["request_id"]) == (404, missing.headers["x-request-id"])
            server.wait_counted("__unmatched__", 404, 1)

        with serving(venv, "opskit-asgi", "demo:app") as server:
            for _ in range(3):
                assert server.get("/items/1").json() == {"id": 1, "name": "kettle"}
            line = server.access_line("/items/1")
            assert line["route"] == "/items/{item_id}" and line["status"] == 200
            server.wait_counted("/items/{item_id}", 200, 3)

        expected = f"opskit-asgi {built.version}"
        assert venv.run("opskit-asgi", "--version") == venv.run("opskit", "--version") == expected
        assert venv.run("python", "-m", "opskit", "--version") == expected
        location = Path(venv.python("import opskit; print(opskit.__file__)")).parent
        assert location.is_relative_to(venv.bin.parent) and (location / "ratelimit" / "gcra.lua").is_file()
        assert (location / "py.typed").is_file()
        assert venv.python("from opskit.otlp.native import NATIVE; print(NATIVE)") == "True"


class TestWithoutFastAPI:
    def test_plain_starlette_app_through_wrap(self, new_venv: MakeVenv, built: Built) -> None:
        """With the wheel alone (no FastAPI, no slowapi), every opskit module imports and a Starlette app
        wrapped by `opskit.wrap()` serves IDs, metrics and the slowapi-shaped limits."""
        venv = new_venv("starlette", DIST)
        assert venv.python("import importlib.util as u; print(u.find_spec('fastapi'), u.find_spec('slowapi'))") == (
            "None None"
        )
        every_module = (
            "import pkgutil, importlib, opskit\n"
            "for m in pkgutil.walk_packages(opskit.__path__, 'opskit.'): importlib.import_module(m.name)\n"
            "print('imported')"
        )
        assert venv.python(every_module) == "imported"

        (venv.cwd / "app.py").write_text(STARLETTE_APP)
        with serving(venv, "opskit-asgi", "app:app") as server:
            # 1 per minute, in each worker's own buckets: of 3 requests on 2 workers, 1 or 2 are refused.
            statuses = []
            for _ in range(3):
                response = server.get("/hello/ada")
                statuses.append(response.status_code)
                if response.status_code == 200:
                    assert response.text == "hello " + response.headers["x-request-id"]
            assert statuses[0] == 200 and statuses.count(200) + statuses.count(429) == 3 and 429 in statuses
            assert server.access_line("/hello/ada")["route"] == "/hello/{name}"
            server.wait_counted("/hello/{name}", 429, statuses.count(429))
            server.wait_counted("/hello/{name}", 200, statuses.count(200))
