"""The package's shape: dependencies point one way, settings are read in one place."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "opskit"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    if level == 0:
        return target or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def _module_level_imports(path: Path) -> set[str]:
    """What ``path`` imports when it is imported: module-level statements, not TYPE_CHECKING blocks
    or imports inside functions (those run later, once every module exists)."""
    module = _module_name(path)
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, is_package, node.level, node.module)
                # A module's own packages are initialised before it in any case: not an edge.
                if not (module == base or module.startswith(base + ".")):
                    found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If):
                test = node.test
                if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
                    continue
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)

    visit(ast.parse(path.read_text()).body)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {m for m in _module_level_imports(path) if m in modules and m != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


class TestDependencies:
    def test_no_import_cycle_inside_the_package(self) -> None:
        """No chain of module-level imports inside opskit leads back to where it started."""
        assert _cycle(_graph()) is None

    def test_the_cycle_finder_finds_cycles(self) -> None:
        """The check itself can fail: a made-up cycle is reported."""
        assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
        assert _cycle({"a": {"b"}, "b": set()}) is None

    def test_features_do_not_import_each_other(self) -> None:
        """A feature package imports the core, never another feature's modules."""
        features = {
            "opskit.tracing",
            "opskit.ratelimit",
            "opskit.logging",
            "opskit.serving",
            "opskit.loop",
            "opskit.overload",
        }
        # The server flushes logs and spans at exit, and makes the workers' shared rate-limit table before forking.
        allowed = {"opskit.serving": {"opskit.logging", "opskit.tracing", "opskit.ratelimit"}}
        for path in PACKAGE.rglob("*.py"):
            module = _module_name(path)
            own = next((f for f in features if module == f or module.startswith(f + ".")), None)
            if own is None:
                continue
            for imported in _all_imports(path):
                other = next((f for f in features if imported == f or imported.startswith(f + ".")), None)
                assert other in (None, own, *allowed.get(own, ())), f"{module} imports {imported}"

    def test_nothing_imports_the_tests(self) -> None:
        """Neither the package nor the benchmark harness imports the test suite."""
        for path in [*PACKAGE.rglob("*.py"), *(ROOT / "bench").rglob("*.py")]:
            assert not any(m == "tests" or m.startswith("tests.") for m in _all_imports(path)), path


def _all_imports(path: Path) -> set[str]:
    module = _module_name(path)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add(_resolve(module, path.name == "__init__.py", node.level, node.module))
    return found


class TestSettings:
    def test_read_in_one_place(self) -> None:
        """Only the runtime's builder and the public function itself call load_settings()."""
        out = subprocess.run(
            ["grep", "-rn", "load_settings(", str(PACKAGE)], capture_output=True, text=True, check=False
        ).stdout
        callers = sorted({line.split(":", 1)[0].removeprefix(str(ROOT) + "/") for line in out.splitlines()})
        assert callers == ["opskit/runtime.py", "opskit/settings/__init__.py"]
