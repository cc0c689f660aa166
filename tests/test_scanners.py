"""Third-party scanners over what the program renders: checkov over every stack's Kubernetes
manifests and server/Dockerfile, parliament over every IAM identity policy. Any finding not
justified in scanners/*.yaml fails, and so does a justification that no longer matches a finding.

The scanners live in their own virtualenv (.venv-scanners, built by `make install`): checkov pins a
boto3 the platform cannot use."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from mlflow_platform import plan

from .paths import ROOT, STACKS, captured

pytestmark = pytest.mark.slow
SCANNERS = ROOT / ".venv-scanners" / "bin"
CHECKOV_SKIPS = yaml.safe_load((ROOT / "scanners" / "checkov-skips.yaml").read_text())
IAM_JUSTIFIED = yaml.safe_load((ROOT / "scanners" / "iam-lint-justified.yaml").read_text())


@pytest.fixture(scope="module")
def scanners() -> Path:
    if not (SCANNERS / "checkov").exists():
        pytest.fail("the scanners' virtualenv is missing: run `make install` (it builds .venv-scanners)")
    return SCANNERS


def checkov(scanners: Path, framework: str, *target: str) -> list[dict]:
    """checkov's failed checks, with every justified skip passed to it."""
    result = subprocess.run(
        [str(scanners / "checkov"), *target, "--framework", framework, "-o", "json", "--quiet", "--compact"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    return [f for r in reports for f in r["results"]["failed_checks"]]


def unjustified(failed: list[dict], framework: str) -> tuple[list[str], list[str]]:
    skips = CHECKOV_SKIPS[framework]
    fired = {f["check_id"] for f in failed}
    new = sorted({f"{f['check_id']} {f['check_name']} ({f['resource']})" for f in failed if f["check_id"] not in skips})
    stale = sorted(set(skips) - fired)
    return new, stale


def test_every_skip_has_a_reason() -> None:
    reasons = [*CHECKOV_SKIPS["kubernetes"].values(), *CHECKOV_SKIPS["dockerfile"].values()]
    reasons += [entry["reason"] for issues in IAM_JUSTIFIED.values() for entry in issues.values()]
    assert reasons and all(isinstance(r, str) and len(r.split()) >= 8 for r in reasons)


@pytest.mark.parametrize("stack", STACKS)
def test_checkov_finds_nothing_unjustified_in_the_manifests(stack: str, scanners: Path, tmp_path: Path) -> None:
    for i, manifest in enumerate(plan.kubernetes_manifests(captured(stack))):
        name = f"{i:02d}-{manifest['kind']}-{manifest['metadata']['name']}.yaml"
        (tmp_path / name).write_text(yaml.safe_dump(manifest))
    failed = checkov(scanners, "kubernetes", "-d", str(tmp_path))
    new, stale = unjustified(failed, "kubernetes")
    assert new == [], "justify in scanners/checkov-skips.yaml or fix:\n" + "\n".join(new)
    assert stale == [], f"skips that no longer fire; remove them: {stale}"


def test_checkov_finds_nothing_unjustified_in_the_dockerfile(scanners: Path) -> None:
    failed = checkov(scanners, "dockerfile", "-f", str(ROOT / "server" / "Dockerfile"))
    new, stale = unjustified(failed, "dockerfile")
    assert new == [] and stale == [], (new, stale)


LINT = """
import json, sys
from parliament import analyze_policy_string, enhance_finding
for doc in json.load(sys.stdin):
    for f in analyze_policy_string(doc["policy"]).findings:
        f = enhance_finding(f)
        detail = f.detail if isinstance(f.detail, str) else json.dumps(f.detail)
        print(json.dumps({"policy": doc["name"], "issue": f.issue, "severity": f.severity, "detail": detail}))
"""


def identity_policies(stack: str) -> list[dict]:
    capture = captured(stack)
    found = capture.of_type("aws:iam/rolePolicy:RolePolicy") + capture.of_type("aws:iam/policy:Policy")
    return [{"name": r.name, "policy": r.inputs["policy"]} for r in found]


def test_parliament_finds_nothing_unjustified_in_any_iam_policy(scanners: Path) -> None:
    documents = [doc for stack in STACKS for doc in identity_policies(stack)]
    assert {d["name"] for d in documents} >= {"ci-deploy-iam", "server-role-artifacts", "cluster-lbc-policy"}
    result = subprocess.run(
        [str(scanners / "python"), "-c", LINT], input=json.dumps(documents), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    findings = [json.loads(line) for line in result.stdout.splitlines()]
    new, used = [], set()
    for f in findings:
        entry = IAM_JUSTIFIED.get(f["policy"], {}).get(f["issue"])
        if entry is None or ("details" in entry and f["detail"] not in entry["details"]):
            new.append(f"{f['policy']}: {f['issue']} ({f['severity']}) {f['detail'][:200]}")
        else:
            used.add((f["policy"], f["issue"]))
    assert new == [], "justify in scanners/iam-lint-justified.yaml or fix:\n" + "\n".join(sorted(set(new)))
    listed = {(policy, issue) for policy, issues in IAM_JUSTIFIED.items() for issue in issues}
    assert listed == used, f"justifications that no longer fire; remove them: {sorted(listed - used)}"


def test_the_lint_catches_an_admin_policy(scanners: Path) -> None:
    """The wiring can fail: a policy granting everything is reported."""
    documents = [
        {
            "name": "probe",
            "policy": json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
            ),
        }
    ]
    result = subprocess.run(
        [str(scanners / "python"), "-c", LINT], input=json.dumps(documents), capture_output=True, text=True
    )
    assert "RESOURCE_STAR" in result.stdout or "PRIVILEGE_ESCALATION" in result.stdout, result.stdout + result.stderr
