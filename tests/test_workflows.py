"""The delivery workflows: linted by actionlint, pinned, least-privilege, and covering every stack."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .paths import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
ACTIONLINT = Path(sys.executable).parent / "actionlint"  # from the actionlint wheel


def load(name: str) -> dict:
    document = yaml.safe_load((WORKFLOWS / name).read_text())
    document["on"] = document.pop(True, document.get("on"))  # YAML 1.1 reads the key `on` as True
    return document


def stack_files(root: Path = ROOT) -> set[str]:
    return {p.name.split(".")[1] for p in (root / "stacks").glob("Pulumi.*.yaml")}


def workflow_stack_problems(stacks: set[str]) -> list[str]:
    """Where each workflow lists stacks, it must list exactly the stack files."""
    places = {
        "pull-request.yml jobs.offline-plan.strategy.matrix.stack": set(
            load("pull-request.yml")["jobs"]["offline-plan"]["strategy"]["matrix"]["stack"]
        ),
        "pull-request.yml jobs.preview.strategy.matrix.stack": set(
            load("pull-request.yml")["jobs"]["preview"]["strategy"]["matrix"]["stack"]
        ),
        "drift.yml jobs.drift.strategy.matrix.stack": set(
            load("drift.yml")["jobs"]["drift"]["strategy"]["matrix"]["stack"]
        ),
        "deploy.yml jobs.*.with.stack": {job["with"]["stack"] for job in load("deploy.yml")["jobs"].values()},
    }
    problems = []
    for place, listed in places.items():
        for stack in sorted(stacks - listed):
            hint = (
                f"a `{stack}` job calling deploy-stack.yml with `stack: {stack}` (and `needs:` on the one before it)"
                if place.startswith("deploy.yml")
                else f"`{stack}` to that list"
            )
            problems.append(f"stacks/Pulumi.{stack}.yaml is not in {place}: add {hint}")
        for stack in sorted(listed - stacks):
            problems.append(f"{place} lists `{stack}` but stacks/Pulumi.{stack}.yaml does not exist: remove it")
    return problems


def test_actionlint_passes_on_every_workflow() -> None:
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    assert len(files) >= 5
    result = subprocess.run([str(ACTIONLINT), *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_does_catch_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - run: echo ${{ github.event.no_such.thing }}\n        uses: actions/checkout@v4.2.2\n"
    )
    assert subprocess.run([str(ACTIONLINT), str(broken)], capture_output=True).returncode != 0


def test_workflow_stacks_equal_the_stack_files() -> None:
    assert workflow_stack_problems(stack_files()) == []


def test_a_new_stack_file_without_workflow_entries_is_named_with_what_to_add() -> None:
    problems = workflow_stack_problems(stack_files() | {"qa"})
    assert (
        "stacks/Pulumi.qa.yaml is not in pull-request.yml jobs.offline-plan.strategy.matrix.stack: "
        "add `qa` to that list" in problems
    )
    assert any("deploy.yml" in p and "calling deploy-stack.yml with `stack: qa`" in p for p in problems)
    assert len(problems) == 4


def test_deploys_run_in_order_with_prod_last() -> None:
    jobs = load("deploy.yml")["jobs"]
    assert jobs["staging"]["needs"] == "dev" and jobs["prod"]["needs"] == "staging"
    up = load("deploy-stack.yml")["jobs"]["up"]
    assert up["environment"] == "${{ inputs.stack }}"
    assert up["concurrency"] == {"group": "deploy-${{ inputs.stack }}", "cancel-in-progress": False}
    smoke = load("deploy-stack.yml")["jobs"]["smoke"]
    assert smoke["needs"] == "up" and any("pytest smoke_tests" in s.get("run", "") for s in smoke["steps"])
    suite = next(s for s in smoke["steps"] if "pytest smoke_tests" in s.get("run", ""))
    # Without these the suite would skip its bucket-layout check, aim at nothing, or give a new
    # grant less time than the stack's permission cache keeps the old answer.
    assert suite["env"] == {
        "MLFLOW_TRACKING_URI": "${{ needs.up.outputs.tracking-url }}",
        "MLFLOW_PLATFORM_ARTIFACT_ROOT": "${{ needs.up.outputs.artifact-root }}",
        "MLFLOW_SMOKE_GRANT_WAIT_SECONDS": "${{ needs.up.outputs.grant-wait }}",
    }
    assert set(up["outputs"]) == {"tracking-url", "admin-secret-arn", "artifact-root", "grant-wait"}


@pytest.mark.parametrize("name", sorted(p.name for p in WORKFLOWS.glob("*.yml")))
def test_actions_are_pinned_and_permissions_are_least_privilege(name: str) -> None:
    workflow = load(name)
    assert workflow.get("permissions") == {"contents": "read"}, "default to read-only at the top"
    for job_name, job in workflow["jobs"].items():
        assert job.get("permissions", {}) != "write-all", job_name
        for step in job.get("steps", []):
            uses = step.get("uses")
            if uses and not uses.startswith("./"):
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+\.\d+\.\d+", uses), (
                    f"{job_name}: pin {uses} to a full version"
                )
        if "id-token" in job.get("permissions", {}):
            assert job["permissions"]["id-token"] == "write" and "contents" in job["permissions"]


def test_pull_request_preview_uses_oidc_and_edits_its_comment() -> None:
    preview = load("pull-request.yml")["jobs"]["preview"]
    assert "head.repo.full_name == github.repository" in preview["if"]
    steps = {s.get("uses", "").split("@")[0]: s for s in preview["steps"]}
    assert "role-to-assume" in steps["aws-actions/configure-aws-credentials"]["with"]
    pulumi = steps["pulumi/actions"]["with"]
    assert pulumi["command"] == "preview" and pulumi["edit-pr-comment"] is True and pulumi["policyPacks"] == "policies"


def test_drift_preview_refreshes_and_expects_no_changes() -> None:
    steps = load("drift.yml")["jobs"]["drift"]["steps"]
    pulumi = next(s for s in steps if s.get("uses", "").startswith("pulumi/actions"))["with"]
    assert pulumi["refresh"] is True and pulumi["expect-no-changes"] is True
    assert any("GITHUB_STEP_SUMMARY" in s.get("run", "") for s in steps)


def test_promotion_template_validates_then_promotes_under_the_lock() -> None:
    steps = load("promote-model.yml")["jobs"]["promote"]["steps"]
    runs = [s.get("run", "") for s in steps]
    validate = next(i for i, r in enumerate(runs) if "mlflow-platform validate" in r)
    promote = next(i for i, r in enumerate(runs) if "mlflow-platform promote" in r)
    assert validate < promote and '--lock "$LOCK"' in runs[promote]


def test_the_smoke_suite_gets_every_stack_output_it_reads_from_the_program() -> None:
    """deploy-stack.yml reads `steps.up.outputs.<name>`: a name the program does not export is an
    empty string at run time (the smoke suite's grant wait would be 0, and a long TTL fails it)."""
    from mlflow_platform.permission_cache import TTL_ENV

    from .paths import STACKS, captured

    workflow = (ROOT / ".github" / "workflows" / "deploy-stack.yml").read_text()
    read = set(re.findall(r"steps\.up\.outputs\.(\w+)", workflow))
    assert "smokeGrantWaitSeconds" in read
    for stack in STACKS:
        capture = captured(stack)
        assert read <= set(capture.outputs), (stack, read - set(capture.outputs))
        ttls = {
            int(e["value"])
            for d in capture.of_type("kubernetes:apps/v1:Deployment")
            for c in d.inputs["spec"]["template"]["spec"]["containers"]
            for e in c.get("env", [])
            if e["name"] == TTL_ENV
        }
        assert ttls and capture.outputs["smokeGrantWaitSeconds"] > max(ttls), (stack, ttls)
