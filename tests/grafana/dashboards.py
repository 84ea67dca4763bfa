"""Read the Grafana dashboards and rule files as lists of PromQL queries, and evaluate them.

The harness of "the dashboards do not lie": every panel target and template-variable query of
``grafana/dashboards/*.json`` and every rule of ``prometheus/rules/*.yaml``, with the template
variables substituted, goes through a real Prometheus server's query API. Point it at any
Prometheus that scrapes an opskit app (see tests/grafana/test_dashboards_live.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from opskit.metrics.naming import Naming
from tests.prometheus.server import PrometheusServer, QueryError
from tests.servers import ROOT

DASHBOARDS = ROOT / "grafana" / "dashboards"
RULES = ROOT / "prometheus" / "rules"
#: Each naming's set (scripts/gen_naming.py writes the otel ones from the hand-written files).
DASHBOARD_FOLDERS: dict[Naming, Path] = {"prometheus": DASHBOARDS, "otel": ROOT / "grafana" / "dashboards-otel"}
FOLDERS: dict[Naming, str] = {"prometheus": ".", "otel": "otel"}  # of rules and their promtool tests

# What Grafana puts in place of the template variables when "All" is selected, and a rate window that
# holds several samples of the tests' 1 s scrape interval.
ALL_VALUES = {"namespace": ".*", "service": ".*", "pod": ".*", "route": ".*", "method": ".*"}
GRAFANA_INTERVALS = {"__rate_interval": "15s", "__interval": "5s", "__range": "1h"}

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(.*?)\s*,\s*(\w+)\s*\)\s*$", re.S)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][A-Za-z0-9_:]*)\b(?!\s*\()")
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan", "Inf", "NaN"})
_RANGE = re.compile(r"\[([^\]]+)\]")


@dataclass(frozen=True)
class Query:
    """One PromQL expression and where it comes from."""

    source: str
    expr: str

    def metric_names(self) -> set[str]:
        """Series names the expression selects."""
        text = _STRING.sub('""', self.expr)
        text = _MATCHERS.sub(" ", text)
        text = _RANGE.sub(" ", text)
        text = _GROUPING.sub(" ", text)
        return {name for name in _IDENTIFIER.findall(text) if name not in _KEYWORDS}

    def ranges(self) -> list[str]:
        """The range-vector windows it uses (``[5m]``, ``[$__rate_interval]``)."""
        return _RANGE.findall(self.expr)


def load_dashboard(path: Path) -> dict[str, Any]:
    with path.open() as f:
        return dict(json.load(f))


def dashboard_files(naming: Naming = "prometheus") -> list[Path]:
    return sorted(DASHBOARD_FOLDERS[naming].glob("*.json"))


def rule_files(naming: Naming = "prometheus") -> list[Path]:
    return sorted((RULES / FOLDERS[naming]).glob("*.yaml"))


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries(path: Path) -> list[Query]:
    dashboard = load_dashboard(path)
    queries = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            source = f"{path.name}: {panel['title']!r} {target.get('refId', '')}"
            queries.append(Query(source, target["expr"]))
    return queries


def variable_queries(path: Path) -> list[Query]:
    """``label_values(selector, label)`` variable queries, as ``group(selector)`` PromQL."""
    queries = []
    for variable in load_dashboard(path)["templating"]["list"]:
        if variable["type"] != "query":
            continue
        text = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = _LABEL_VALUES.match(text)
        if match is None:
            raise ValueError(f"{path.name}: variable {variable['name']}: only label_values(selector, label) is used")
        queries.append(Query(f"{path.name}: variable {variable['name']}", f"group({match.group(1)})"))
    return queries


def rule_queries(path: Path) -> list[Query]:
    with path.open() as f:
        groups = yaml.safe_load(f)["groups"]
    return [
        Query(f"{path.name}: {rule.get('record') or rule.get('alert')}", str(rule["expr"]))
        for group in groups
        for rule in group["rules"]
    ]


def recorded_names(naming: Naming = "prometheus") -> set[str]:
    groups = [group for path in rule_files(naming) for group in yaml.safe_load(path.read_text())["groups"]]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def substitute(expr: str, values: dict[str, str] | None = None) -> str:
    """Replace Grafana template variables (``$x``, ``${x}``, ``${x:regex}``, ``[[x]]``) by their values."""
    table = {**ALL_VALUES, **GRAFANA_INTERVALS, **(values or {})}

    def replace(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name not in table:
            raise KeyError(f"no value for template variable {name!r} in {expr!r}")
        return table[name]

    return _VARIABLE.sub(replace, expr)


def evaluate(
    prometheus: PrometheusServer,
    queries: Iterable[Query],
    *,
    needs_data: Callable[[Query], bool] = lambda query: False,
    values: dict[str, str] | None = None,
) -> list[str]:
    """Run every query; the list of problems (invalid PromQL, or no data where ``needs_data`` says)."""
    problems = []
    for query in queries:
        expr = substitute(query.expr, values)
        try:
            result = prometheus.query(expr)
        except QueryError as exc:
            problems.append(f"{query.source}: invalid: {exc}\n    {expr}")
            continue
        if needs_data(query) and not result:
            problems.append(f"{query.source}: no data\n    {expr}")
    return problems
