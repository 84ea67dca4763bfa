"""Generate the dashboards and rules of ``OPSKIT_METRICS_NAMING=otel`` from the Prometheus-named ones.

The hand-written files (``grafana/dashboards/*.json``, ``prometheus/rules/*.yaml``, the promtool unit
tests and the prometheus-adapter values) stay the one source of truth. This script rewrites their
PromQL with opskit's own family table (:mod:`opskit.metrics.naming`) into ``grafana/dashboards-otel/``
(beside, not inside, the dashboards: Grafana's file provider reads subfolders too, and both sets
share their uids) and an ``otel/`` folder in each of the others. Series names change
(``http_requests_total`` is the duration histogram's ``_count`` there, the conventions having no
request counter), and so do the labels of the HTTP families in selectors, ``by``/``without``
clauses, ``label_values()``, legends and data links. A label the conventions' family does not have
(the route of requests in flight) is dropped from matchers, groupings and legends.

    python scripts/gen_naming.py          # write the otel files
    python scripts/gen_naming.py --check  # exit 1 when a committed otel file differs (tests run this)
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from opskit.metrics.naming import Family, families

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "grafana" / "dashboards"
DASHBOARDS_OTEL = ROOT / "grafana" / "dashboards-otel"
RULES = ROOT / "prometheus" / "rules"
UNIT_TESTS = ROOT / "prometheus" / "tests"
ADAPTER = ROOT / "helm" / "opskit" / "adapter"
OTEL = "otel"

# Panels whose title names a grouping the conventions' family cannot give.
TITLES = {"In flight by route": "In flight"}
LEGENDS = {"In flight": "in flight"}

LabelMap = dict[str, str | None]  # a Prometheus-naming label -> its otel label (None: the family has none)


def _series_map() -> dict[str, tuple[str, LabelMap]]:
    """Every series name of the HTTP families, Prometheus naming -> (otel series name, label map)."""
    prometheus, otel = families("prometheus"), families("otel")
    out: dict[str, tuple[str, LabelMap]] = {}
    for role, old in prometheus.items():
        new = otel.get(role)
        suffixes = ("_bucket", "_count", "_sum") if old.kind == "histogram" else ("",)
        if new is None:  # the request counter: the duration's count counts the requests
            new = otel["duration"]
            out[old.name] = (new.name + "_count", _labels(old, new))
            continue
        for suffix in suffixes:
            out[old.name + suffix] = (new.name + suffix, _labels(old, new))
    return out


def _labels(old: Family, new: Family) -> LabelMap:
    fields = dict(zip(new.fields, new.labels, strict=True))
    return {label: fields.get(field) for field, label in zip(old.fields, old.labels, strict=True)}


SERIES = _series_map()

_TOKEN = re.compile(
    r"""(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
      |(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
      |(?P<range>\[[^\]]*\])
      |(?P<var>\$\{[^}]*\}|\$\w+)
      |(?P<op>=~|!~|!=|==|>=|<=)
      |(?P<space>\s+)
      |(?P<other>.)""",
    re.X | re.S,
)
_GROUPING = {"by", "without"}
_MATCHING = {"on", "ignoring", "group_left", "group_right"}
_KEYWORDS = _GROUPING | _MATCHING | {"and", "or", "unless", "bool", "offset", "atan2"}


class Tokens:
    """A PromQL expression as tokens, rewritten in place."""

    def __init__(self, expr: str) -> None:
        self.kinds: list[str] = []
        self.text: list[str] = []
        for match in _TOKEN.finditer(expr):
            kind = match.lastgroup or "other"
            self.kinds.append(kind)
            self.text.append(match.group())

    def next_solid(self, i: int) -> int:
        """The index of the first non-space token after ``i`` (len when none)."""
        i += 1
        while i < len(self.kinds) and self.kinds[i] == "space":
            i += 1
        return i

    def previous_solid(self, i: int) -> int:
        i -= 1
        while i >= 0 and self.kinds[i] == "space":
            i -= 1
        return i

    def closing(self, i: int) -> int:
        """The index of the bracket closing the one at ``i``."""
        pairs = {"(": ")", "{": "}"}
        opening, depth = self.text[i], 0
        for j in range(i, len(self.text)):
            if self.kinds[j] != "other":
                continue
            if self.text[j] == opening:
                depth += 1
            elif self.text[j] == pairs[opening]:
                depth -= 1
                if depth == 0:
                    return j
        raise ValueError(f"unbalanced {opening!r} in {''.join(self.text)!r}")

    def opening(self, i: int) -> int:
        """The index of the ``(`` that the ``)`` at ``i`` closes."""
        depth = 0
        for j in range(i, -1, -1):
            if self.kinds[j] != "other":
                continue
            if self.text[j] == ")":
                depth += 1
            elif self.text[j] == "(":
                depth -= 1
                if depth == 0:
                    return j
        raise ValueError(f"unbalanced ')' in {''.join(self.text)!r}")

    def is_metric(self, i: int) -> bool:
        if self.kinds[i] != "ident" or self.text[i] in _KEYWORDS:
            return False
        after = self.next_solid(i)
        return not (after < len(self.text) and self.text[after] == "(")

    def __str__(self) -> str:
        return "".join(self.text)


def _merge(maps: Iterator[LabelMap], where: str) -> LabelMap:
    out: LabelMap = {}
    for labels in maps:
        for old, new in labels.items():
            if old in out and out[old] != new:
                raise ValueError(f"{where}: label {old!r} maps to {out[old]!r} and {new!r}")
            out[old] = new
    return out


def _metrics_in(tokens: Tokens, start: int, end: int) -> Iterator[LabelMap]:
    """The label maps of the HTTP series selected between ``start`` and ``end``, braces skipped."""
    i = start
    while i <= end:
        if tokens.kinds[i] == "other" and tokens.text[i] == "{":
            i = tokens.closing(i) + 1
            continue
        if tokens.is_metric(i) and tokens.text[i] in SERIES:
            yield SERIES[tokens.text[i]][1]
        i += 1


def _drop_list_item(tokens: Tokens, i: int) -> None:
    """Remove the identifier at ``i`` from a comma-separated list, with one adjacent comma."""
    tokens.text[i] = ""
    after = tokens.next_solid(i)
    if after < len(tokens.text) and tokens.text[after] == ",":
        tokens.text[after] = ""
        for j in range(i + 1, tokens.next_solid(after)):
            tokens.text[j] = ""
        return
    before = tokens.previous_solid(i)
    if before >= 0 and tokens.text[before] == ",":
        for j in range(before, i):
            tokens.text[j] = ""


def _rewrite_selector(tokens: Tokens, brace: int, labels: LabelMap) -> None:
    """Rename (or drop) the label matchers in the braces opening at ``brace``."""
    close = tokens.closing(brace)
    i = brace + 1
    while i < close:
        if tokens.kinds[i] == "ident":
            op = tokens.next_solid(i)
            if op < close and (tokens.kinds[op] == "op" or tokens.text[op] == "="):
                value = tokens.next_solid(op)
                name = tokens.text[i]
                if name in labels and labels[name] is None:
                    # "All" of a label the family does not have: the matcher goes.
                    for j in range(i, value + 1):
                        tokens.text[j] = ""
                    comma = tokens.next_solid(value)
                    if comma < close and tokens.text[comma] == ",":
                        for j in range(value + 1, tokens.next_solid(comma)):
                            tokens.text[j] = ""
                    else:
                        previous = tokens.previous_solid(i)
                        if tokens.text[previous] == ",":
                            for j in range(previous, i):
                                tokens.text[j] = ""
                elif name in labels:
                    tokens.text[i] = str(labels[name])
                i = value + 1
                continue
        i += 1


def translate(expr: str, where: str = "") -> str:
    """``expr`` with the otel naming's series and labels."""
    tokens = Tokens(expr)
    n = len(tokens.text)
    # Grouping clauses first: they read the original series names of the expression they aggregate.
    for i in range(n):
        if tokens.kinds[i] != "ident" or tokens.text[i] not in _GROUPING:
            continue
        open_list = tokens.next_solid(i)
        if open_list >= n or tokens.text[open_list] != "(":
            continue
        close_list = tokens.closing(open_list)
        body = tokens.next_solid(close_list)
        if body < n and tokens.text[body] == "(":
            span = (body, tokens.closing(body))
        else:  # sum(expr) by (labels)
            previous = tokens.previous_solid(i)
            span = (tokens.opening(previous), previous)
        labels = _merge(_metrics_in(tokens, *span), where)
        for j in range(open_list + 1, close_list):
            if tokens.kinds[j] == "ident" and tokens.text[j] in labels:
                new = labels[tokens.text[j]]
                if new is None:
                    _drop_list_item(tokens, j)
                else:
                    tokens.text[j] = new
        if not any(tokens.text[j].strip() for j in range(open_list + 1, close_list)):
            start = i - 1 if tokens.kinds[i - 1] == "space" else i
            for j in range(start, body if body < n and tokens.text[body] == "(" else close_list + 1):
                tokens.text[j] = ""  # "sum by () (x)" is "sum(x)"
    for i in range(n):
        if tokens.kinds[i] == "ident" and tokens.text[i] in _MATCHING:
            open_list = tokens.next_solid(i)
            if open_list < n and tokens.text[open_list] == "(":
                used = {tokens.text[j] for j in range(open_list, tokens.closing(open_list))}
                http = {label for _, labels in SERIES.values() for label in labels}
                if used & http:
                    raise ValueError(f"{where}: {tokens.text[i]}() on HTTP labels is not translated: {expr!r}")
    i = 0
    while i < n:
        if tokens.kinds[i] == "other" and tokens.text[i] == "{":
            i = tokens.closing(i) + 1  # a selector without a name (or already handled)
            continue
        if tokens.is_metric(i) and tokens.text[i] in SERIES:
            name, labels = SERIES[tokens.text[i]]
            tokens.text[i] = name
            brace = tokens.next_solid(i)
            if brace < n and tokens.text[brace] == "{":
                _rewrite_selector(tokens, brace, labels)
                i = tokens.closing(brace)
        elif tokens.kinds[i] == "ident" and tokens.text[i] in _GROUPING | _MATCHING:
            open_list = tokens.next_solid(i)
            if open_list < n and tokens.text[open_list] == "(":
                i = tokens.closing(open_list)  # label lists: done above
        i += 1
    return str(tokens)


def labels_of(expr: str) -> LabelMap:
    """The label renames of every HTTP series ``expr`` selects."""
    tokens = Tokens(expr)
    return _merge(_metrics_in(tokens, 0, len(tokens.text) - 1), expr)


_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_LABEL_VALUES = re.compile(r"^(\s*label_values\(\s*)(.*?)(\s*,\s*)(\w+)(\s*\)\s*)$", re.S)


def legend(text: str, labels: LabelMap) -> str:
    """A legend format with the labels renamed; the placeholder of a label the family lacks goes."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in labels:
            return match.group()
        new = labels[name]
        return "" if new is None else "{{" + new + "}}"

    return " ".join(_LEGEND.sub(replace, text).split())


_FIELD_LABEL = re.compile(r"__field\.labels\.(\w+)")


def _field_label(match: re.Match[str], labels: LabelMap) -> str:
    new = labels.get(match.group(1))
    if match.group(1) in labels and new is None:
        raise ValueError(f"a data link reads {match.group(1)!r}, which the otel family has not")
    return f"__field.labels.{new}" if new else match.group()


def variable_query(text: str) -> str:
    """``label_values(selector, label)`` in the otel naming."""
    match = _LABEL_VALUES.match(text)
    if match is None:
        return translate(text)
    head, selector, comma, label, tail = match.groups()
    new = labels_of(selector).get(label, label)
    if new is None:
        raise ValueError(f"variable query {text!r}: {label!r} has no otel label")
    return f"{head}{translate(selector)}{comma}{new}{tail}"


def dashboard(source: dict[str, Any]) -> dict[str, Any]:
    """A dashboard in the otel naming."""
    out: dict[str, Any] = json.loads(json.dumps(source))
    for panel in _panels(out):
        title = TITLES.get(panel.get("title", ""), panel.get("title", ""))
        panel_labels = _merge((labels_of(t["expr"]) for t in panel.get("targets", [])), panel.get("title", ""))
        for link in panel.get("fieldConfig", {}).get("defaults", {}).get("links", []):
            link["url"] = _FIELD_LABEL.sub(partial(_field_label, labels=panel_labels), link["url"])
        for target in panel.get("targets", []):
            labels = labels_of(target["expr"])
            target["expr"] = translate(target["expr"], f"{out['uid']}: {panel['title']}")
            if "legendFormat" in target:
                target["legendFormat"] = LEGENDS.get(title, legend(target["legendFormat"], labels))
        if "title" in panel:
            panel["title"] = title
    for variable in out.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        if isinstance(query, dict) and "query" in query:
            query["query"] = variable_query(query["query"])
        elif isinstance(query, str):
            variable["query"] = variable_query(query)
        if "definition" in variable:
            variable["definition"] = variable_query(variable["definition"])
    out["description"] = out.get("description", "") + " (OpenTelemetry metric names, OPSKIT_METRICS_NAMING=otel.)"
    return out


def _panels(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in node.get("panels", []):
        yield panel
        yield from _panels(panel)


def _walk(node: Any, keys: set[str], change: Callable[[str], str]) -> Any:
    if isinstance(node, dict):
        return {k: change(v) if k in keys and isinstance(v, str) else _walk(v, keys, change) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk(item, keys, change) for item in node]
    return node


def _header(source: Path, target: Path) -> str:
    relative = os.path.relpath(source, target.parent)
    return f"# Generated by scripts/gen_naming.py from {relative} for OPSKIT_METRICS_NAMING=otel: do not edit.\n"


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL, descriptions) as literal blocks, as the sources write them."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _string)


def _yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)


def rules(source: Path, target: Path) -> str:
    data = yaml.safe_load(source.read_text())
    return _header(source, target) + _yaml(_walk(data, {"expr"}, lambda e: translate(e, source.name)))


def unit_tests(source: Path, target: Path) -> str:
    data = yaml.safe_load(source.read_text())
    data = _walk(data, {"series", "expr"}, lambda e: translate(e, source.name))
    data["rule_files"] = [
        os.path.relpath((source.parent / p).parent / OTEL / Path(p).name, target.parent) for p in data["rule_files"]
    ]
    return _header(source, target) + _yaml(data)


def adapter(source: Path, target: Path) -> str:
    data = yaml.safe_load(source.read_text())
    for rule in data["rules"]["custom"]:
        rule["seriesQuery"] = translate(rule["seriesQuery"])
        matches = rule["name"]["matches"]
        old = matches.strip("^$")
        if old in SERIES:
            rule["name"]["matches"] = f"^{SERIES[old][0]}$"
    return _header(source, target) + _yaml(data)


def outputs() -> dict[Path, str]:
    """Every generated file and its content."""
    out: dict[Path, str] = {}
    for path in sorted(DASHBOARDS.glob("*.json")):
        source = json.loads(path.read_text())
        out[DASHBOARDS_OTEL / path.name] = json.dumps(dashboard(source), indent=2) + "\n"
    for path in sorted(RULES.glob("*.yaml")):
        out[RULES / OTEL / path.name] = rules(path, RULES / OTEL / path.name)
    for path in sorted(UNIT_TESTS.glob("*.yaml")):
        out[UNIT_TESTS / OTEL / path.name] = unit_tests(path, UNIT_TESTS / OTEL / path.name)
    for path in sorted(ADAPTER.glob("*.yaml")):
        out[ADAPTER / OTEL / path.name] = adapter(path, ADAPTER / OTEL / path.name)
    return out


def main(argv: list[str]) -> int:
    generated = outputs()
    if "--check" in argv:
        stale = [str(p.relative_to(ROOT)) for p, text in generated.items() if not p.exists() or p.read_text() != text]
        known = {p.parent for p in generated}
        extra = [str(p.relative_to(ROOT)) for d in known for p in d.iterdir() if p not in generated]
        if stale or extra:
            print("out of date (run python scripts/gen_naming.py):", *stale, *extra, sep="\n  ", file=sys.stderr)
            return 1
        return 0
    for path, text in generated.items():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
