"""The Prometheus rule files: valid for promtool, unit-tested, documented, built on exported metrics.

promtool checks and runs both sets: the hand-written one and the one generated for OPSKIT_METRICS_NAMING=otel.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from opskit.metrics.naming import NAMINGS, Naming
from tests.grafana.dashboards import FOLDERS, RULES, recorded_names, rule_files, rule_queries
from tests.prometheus.exported_metrics import EXTERNAL, RATELIMIT_DECISIONS, exported_series
from tests.servers import ROOT, which

UNIT_TESTS = ROOT / "prometheus" / "tests" / "opskit-alerts.test.yaml"
RUNBOOKS = ROOT / "prometheus" / "runbooks.md"
RULE_FILES = rule_files()
ALL_RULE_FILES = [path for naming in NAMINGS for path in rule_files(naming)]


def unit_tests(naming: Naming) -> Path:
    return UNIT_TESTS.parent / FOLDERS[naming] / UNIT_TESTS.name


def _promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([which("promtool"), *map(str, args)], capture_output=True, text=True, timeout=120)


def _rules() -> list[dict[str, Any]]:
    groups = [group for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]]
    return [rule for group in groups for rule in group["rules"]]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "alert" in rule]


class TestPromtool:
    """promtool, the reference checker, accepts the rules and passes their unit tests."""

    @pytest.mark.parametrize("path", ALL_RULE_FILES, ids=lambda p: str(p.relative_to(RULES)))
    def test_check_rules(self, path: Path) -> None:
        """`promtool check rules` finds no syntax or lint error."""
        result = _promtool("check", "rules", path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout

    @pytest.mark.parametrize("naming", NAMINGS)
    def test_unit_tests_pass(self, naming: Naming) -> None:
        """`promtool test rules`: every alert fires on the bad series and stays quiet on the good ones."""
        result = _promtool("test", "rules", unit_tests(naming))
        assert result.returncode == 0, result.stdout + result.stderr

    def test_unit_tests_can_fail(self, tmp_path: Path) -> None:
        """The unit tests bite: with a 10 % error budget instead of 0.1 %, the paging test fails."""
        for path in RULE_FILES:
            text = path.read_text().replace(" * 0.001)", " * 0.1)")
            (tmp_path / path.name).write_text(text)
        tests = yaml.safe_load(UNIT_TESTS.read_text())
        tests["rule_files"] = [str(tmp_path / Path(p).name) for p in tests["rule_files"]]
        tests["tests"] = [test for test in tests["tests"] if test["name"].startswith("availability: 5 %")]
        copy = tmp_path / "unit.yaml"
        copy.write_text(yaml.safe_dump(tests))
        result = _promtool("test", "rules", copy)
        assert result.returncode != 0
        assert "5 % errors for an hour page and ticket" in result.stdout + result.stderr


class TestUnitTestCoverage:
    """The unit test file covers each alert both ways."""

    def _cases(self) -> list[dict[str, Any]]:
        tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
        return [case for test in tests for case in test.get("alert_rule_test", [])]

    @pytest.mark.parametrize("naming", NAMINGS)
    def test_unit_tests_load_every_rule_file(self, naming: Naming) -> None:
        """The unit tests run against every rule file shipped, the otel ones against the otel rules."""
        path = unit_tests(naming)
        listed = {(path.parent / p).resolve() for p in yaml.safe_load(path.read_text())["rule_files"]}
        assert listed == {path.resolve() for path in rule_files(naming)}

    @pytest.mark.parametrize("alert", sorted({a["alert"] for a in _alerts()}))
    def test_each_alert_fires_and_stays_quiet(self, alert: str) -> None:
        """At least one case expects the alert, and one expects silence."""
        cases = [case for case in self._cases() if case["alertname"] == alert]
        assert any(case["exp_alerts"] for case in cases), f"{alert} is never shown firing"
        assert any(not case["exp_alerts"] for case in cases), f"{alert} is never shown quiet"

    @pytest.mark.parametrize("severity", ["critical", "warning"])
    @pytest.mark.parametrize("alert", ["OpskitAvailabilityBudgetBurn", "OpskitLatencyBudgetBurn"])
    def test_each_burn_rate_severity_fires(self, alert: str, severity: str) -> None:
        """Both the page (fast burn) and the ticket (slow burn) of each SLO are shown firing."""
        fired = {
            expected["exp_labels"]["severity"]
            for case in self._cases()
            if case["alertname"] == alert
            for expected in case["exp_alerts"]
        }
        assert severity in fired


class TestRuleContent:
    """What the rules say and read."""

    @pytest.mark.parametrize("alert", _alerts(), ids=lambda a: f"{a['alert']}-{a['labels']['severity']}")
    def test_alerts_are_documented(self, alert: dict[str, Any]) -> None:
        """summary, description and a runbook_url whose section exists in prometheus/runbooks.md."""
        annotations = alert["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip()
        url = annotations["runbook_url"]
        assert url.startswith("https://") and url.endswith("prometheus/runbooks.md#" + alert["alert"].lower())
        headings = {line[3:].strip().lower() for line in RUNBOOKS.read_text().splitlines() if line.startswith("## ")}
        assert alert["alert"].lower() in headings
        assert alert["labels"]["severity"] in {"critical", "warning"}

    def test_burn_rate_windows_are_the_sre_workbook_ones(self) -> None:
        """The SLO alerts pair 1h/5m and 6h/30m (page), 1d/2h and 3d/6h (ticket) with 14.4, 6, 3 and 1."""
        for alert in _alerts():
            if not alert["alert"].endswith("BudgetBurn"):
                continue
            pairs = re.findall(r"ratio_rate(\w+) > \(([\d.]+) \* [\d.]+\)", alert["expr"])
            if alert["labels"]["severity"] == "critical":
                assert pairs == [("1h", "14.4"), ("5m", "14.4"), ("6h", "6"), ("30m", "6")]
            else:
                assert pairs == [("1d", "3"), ("2h", "3"), ("3d", "1"), ("6h", "1")]

    @pytest.mark.parametrize("naming", NAMINGS)
    def test_rules_read_only_known_metrics(self, naming: Naming) -> None:
        """Rules select metrics opskit exports, their own recordings, or Prometheus's `up`."""
        known = exported_series(naming) | recorded_names(naming) | set(EXTERNAL)
        for path in rule_files(naming):
            for query in rule_queries(path):
                assert query.metric_names(), query.source
                assert query.metric_names() <= known, f"{query.source}: {query.metric_names() - known}"

    def test_rate_limit_decisions_exist(self) -> None:
        """The decision values the rules match are ones the rate limiter emits."""
        for query in rule_queries(RULES / "opskit-alerts.yaml"):
            for values in re.findall(r'decision=~"([^"]+)"', query.expr):
                assert set(values.split("|")) <= set(RATELIMIT_DECISIONS)

    def test_group_names_are_unique(self) -> None:
        """The chart joins every file into one PrometheusRule, whose group names must be unique."""
        names = [g["name"] for path in RULE_FILES for g in yaml.safe_load(path.read_text())["groups"]]
        assert len(names) == len(set(names))

    def test_recording_rule_names(self) -> None:
        """Recording rules follow level:metric:operations."""
        for name in recorded_names():
            assert re.fullmatch(r"opskit:[a-z_]+:[a-z_0-9]+", name), name
