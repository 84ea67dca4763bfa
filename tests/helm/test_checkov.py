"""checkov, run once over every rendered scenario, finds nothing; each skip is written in the chart with a reason."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm.chart import SCENARIOS, render_scenario
from tests.servers import which


@pytest.fixture(scope="module")
def checkov_results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One checkov run over all scenarios (it is slow to start), results keyed by scenario."""
    out = tmp_path_factory.mktemp("rendered")
    for values in SCENARIOS:
        (out / f"{values.stem}.yaml").write_text(yaml.safe_dump_all(render_scenario(values)))
    result = subprocess.run(
        [which("checkov"), "-d", str(out), "--framework", "kubernetes", "--skip-download", "--compact", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode in (0, 1), result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["summary"]["parsing_errors"] == 0
    yield report["results"]


def _for(results: dict[str, Any], outcome: str, values: Path) -> list[dict[str, Any]]:
    return [check for check in results.get(outcome, []) if Path(check["file_path"]).stem == values.stem]


@pytest.mark.slow
class TestCheckov:
    """The rendered manifests pass checkov's Kubernetes policies."""

    @pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.stem)
    def test_no_failed_check(self, checkov_results: dict[str, Any], values: Path) -> None:
        """Zero failed checks, and checkov really examined the scenario's objects."""
        failed = _for(checkov_results, "failed_checks", values)
        assert not failed, [(c["check_id"], c["resource"], c["check_name"]) for c in failed]
        assert len(_for(checkov_results, "passed_checks", values)) > 50

    @pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.stem)
    def test_skips_are_few_and_explained(self, checkov_results: dict[str, Any], values: Path) -> None:
        """Every skip comes from a chart annotation with a reason; only the accepted policies are skipped."""
        accepted = {"CKV_K8S_43", "CKV_K8S_35", "CKV_K8S_15", "CKV_K8S_8", "CKV_K8S_9"}
        for check in _for(checkov_results, "skipped_checks", values):
            assert check["check_id"] in accepted, check["check_id"]
            assert len(check["check_result"].get("suppress_comment") or "") > 20, check
