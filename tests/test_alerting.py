"""The alert rules through Prometheus's own tools: `promtool check rules` parses them and
`promtool test rules` runs tests/promtool/alerts_test.yaml, a firing and a quiet case per alert on
synthetic series. promtool comes from Debian's `prometheus` package (.ci/run installs it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from mlflow_platform import alerting
from mlflow_platform.config import load_stack_file

from .paths import ROOT
from .test_infra_program import run_with, stack_section

PROD = load_stack_file(ROOT / "stacks" / "Pulumi.prod.yaml").config


def _promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: apt-get install prometheus (Debian), as .ci/run does"
    return found


def _run(rules: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    shutil.copy(ROOT / "tests" / "promtool" / "alerts_test.yaml", tmp_path)
    checked = subprocess.run(
        [_promtool(), "check", "rules", "alerts.yaml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    return subprocess.run(
        [_promtool(), "test", "rules", "alerts_test.yaml"], cwd=tmp_path, capture_output=True, text=True
    )


def test_every_alert_fires_and_stays_quiet_where_it_should(tmp_path: Path) -> None:
    result = _run(alerting.rules(PROD), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {t["alertname"] for c in yaml.safe_load((ROOT / "tests/promtool/alerts_test.yaml").read_text())["tests"]
              for t in c["alert_rule_test"] if t["exp_alerts"]}  # fmt: skip
    quiet = {t["alertname"] for c in yaml.safe_load((ROOT / "tests/promtool/alerts_test.yaml").read_text())["tests"]
             for t in c["alert_rule_test"] if not t["exp_alerts"]}  # fmt: skip
    names = {r["alert"] for g in alerting.rules(PROD)["groups"] for r in g["rules"]}
    assert tested == quiet == names


def test_the_unit_tests_catch_a_wrong_threshold(tmp_path: Path) -> None:
    """Not a test that cannot fail: a rule ten times too lax misses its firing case."""
    lax = alerting.rules(PROD)
    burst = next(r for r in lax["groups"][0]["rules"] if r["alert"] == "MLflowLoginFailureBurst")
    burst["expr"] = burst["expr"].replace(f"> {alerting.AUTH_FAILURES_PER_MINUTE}", "> 300")
    result = _run(lax, tmp_path)
    assert result.returncode != 0 and "MLflowLoginFailureBurst" in result.stdout + result.stderr


def test_the_committed_rule_file_is_the_rendered_one() -> None:
    assert (ROOT / alerting.RULE_FILE).read_text() == alerting.rule_file(PROD), (
        "stale: run `python -m mlflow_platform.alerting --write`"
    )


def test_the_rules_ship_beside_the_service_monitor() -> None:
    capture = run_with("prod", monitoring={**stack_section("prod", "monitoring"), "serviceMonitor": True})
    rule = capture.one("kubernetes:monitoring.coreos.com/v1:PrometheusRule").inputs
    assert rule["spec"] == alerting.rules(PROD)
    assert rule["metadata"]["namespace"] == PROD.namespace
