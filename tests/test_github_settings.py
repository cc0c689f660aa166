"""`mlflow-platform ci check` against a stand-in for GitHub's REST API over real HTTP, answering with
the documented response shapes of "Get an environment", "List deployment branch policies",
"List repository secrets" and "List environment secrets"."""

from __future__ import annotations

import copy

import pytest
from typer.testing import CliRunner

from mlflow_platform.cli import app
from mlflow_platform.config import load_stack_file
from mlflow_platform.github_settings import GitHub, check

from .json_stub import json_api
from .paths import ROOT

REPO = "example-org/mlflow-platform"
ENVS = f"/repos/{REPO}/environments"
TOKEN = "PULUMI_ACCESS_TOKEN"


def _environment(name: str, *, reviewers: bool, branches: bool = True, self_review: bool = False) -> dict:
    rules = [{"id": 1, "type": "branch_policy"}] if branches else []
    if reviewers:
        rules.append(
            {"id": 2, "type": "required_reviewers", "prevent_self_review": not self_review,
             "reviewers": [{"type": "Team", "reviewer": {"slug": "platform"}}]}
        )  # fmt: skip
    policy = {"protected_branches": False, "custom_branch_policies": True} if branches else None
    return {"id": 7, "name": name, "protection_rules": rules, "deployment_branch_policy": policy}


def _secure_repository() -> dict[str, object]:
    """prod's three Environments as docs/ci-cd.md asks; every path GitHub would answer."""
    answers: dict[str, object] = {
        f"/repos/{REPO}/actions/secrets": {"total_count": 0, "secrets": []},
        f"/repos/{REPO}/actions/organization-secrets": {"total_count": 0, "secrets": []},
    }
    for name, reviewers in (("prod", True), ("prod-preview", True), ("prod-drift", False)):
        answers[f"/repos/{REPO}/environments/{name}"] = _environment(
            name, reviewers=reviewers, branches=name != "prod-preview"
        )
        answers[f"/repos/{REPO}/environments/{name}/deployment-branch-policies"] = {
            "total_count": 1,
            "branch_policies": [{"id": 3, "name": "main", "type": "branch"}],
        }
        answers[f"/repos/{REPO}/environments/{name}/secrets"] = {
            "total_count": 1,
            "secrets": [{"name": "PULUMI_ACCESS_TOKEN", "created_at": "2026-01-01T00:00:00Z"}],
        }
    return answers


@pytest.fixture
def github():
    """A stand-in API whose answers each test edits; anything else is a 404, as GitHub says."""
    answers = _secure_repository()
    seen: list[str] = []

    def answer(path: str, params: dict, headers: dict):
        seen.append(headers.get("Authorization", ""))
        body = answers.get(path)
        if body is not None and "secrets" in body:  # paged as GitHub pages it: per_page (30 unless asked)
            size, page = int(params.get("per_page", 30)), int(params.get("page", 1))
            body = {**body, "secrets": body["secrets"][(page - 1) * size : page * size]}
        return body, "application/json"

    with json_api(answer) as url:
        yield url, answers, seen


def _prod():
    return load_stack_file(ROOT / "stacks" / "Pulumi.prod.yaml").config


def test_a_repository_set_up_as_documented_passes(github) -> None:
    api, _, seen = github
    assert check(GitHub("t0ken", api), REPO, _prod()) == []
    assert set(seen) == {"Bearer t0ken"}


@pytest.mark.parametrize(
    ("edit", "environment", "fragment"),
    [
        (lambda a: a.__setitem__(f"/repos/{REPO}/actions/secrets", {"secrets": [{"name": "PULUMI_ACCESS_TOKEN"}]}),
         "(repository)", "is a repository secret"),
        (lambda a: a.__setitem__(f"/repos/{REPO}/actions/organization-secrets", {"secrets": [{"name": TOKEN}]}),
         "(organization)", "is an organization secret"),
        (lambda a: a.pop(f"/repos/{REPO}/actions/secrets"), "(repository)", "cannot list the repository secrets"),
        (lambda a: a[f"/repos/{REPO}/environments/prod"].__setitem__("deployment_branch_policy", None),
         "prod", "any branch may deploy"),
        (lambda a: a[f"/repos/{REPO}/environments/prod-drift/deployment-branch-policies"]["branch_policies"].append(
            {"id": 4, "name": "release/*", "type": "branch"}), "prod-drift", "allow `main` only"),
        (lambda a: a.__setitem__(f"{ENVS}/prod-preview", _environment("prod-preview", reviewers=False)),
         "prod-preview", "no required reviewer"),
        (lambda a: a.__setitem__(f"{ENVS}/prod", _environment("prod", reviewers=True, self_review=True)),
         "prod", "Prevent self-review"),
        (lambda a: a.pop(f"/repos/{REPO}/environments/prod-drift"), "prod-drift", "does not exist"),
        (lambda a: a.__setitem__(f"/repos/{REPO}/environments/prod/secrets", {"secrets": []}), "prod", "has no PULUMI"),
    ],
)  # fmt: skip
def test_each_gap_is_named_with_its_environment(github, edit, environment: str, fragment: str) -> None:
    api, answers, _ = github
    edit(answers)
    findings = check(GitHub("t", api), REPO, _prod())
    assert [(f.environment, fragment in f.problem) for f in findings] == [(environment, True)], findings


def test_a_repository_token_on_a_later_page_and_a_tag_named_main_are_still_found(github) -> None:
    """GitHub pages secret lists (30 by default): the check reads every page. A deployment policy
    for the *tag* `main` is not the branch `main`; neither is "any protected branch"."""
    api, answers, _ = github
    others = [{"name": f"OTHER_{i:03d}"} for i in range(130)]
    answers[f"/repos/{REPO}/actions/secrets"] = {
        "total_count": 131,
        "secrets": [*others, {"name": "PULUMI_ACCESS_TOKEN"}],
    }
    answers[f"{ENVS}/prod-drift/deployment-branch-policies"]["branch_policies"] = [
        {"id": 5, "name": "main", "type": "tag"}
    ]
    answers[f"{ENVS}/prod"]["deployment_branch_policy"] = {"protected_branches": True, "custom_branch_policies": False}
    found = {(f.environment, f.problem.split(":")[0]) for f in check(GitHub("t", api), REPO, _prod())}
    assert found == {
        ("(repository)", "PULUMI_ACCESS_TOKEN is a repository secret"),
        ("prod-drift", "deploys from ['tag"),
        ("prod", "any protected branch may deploy"),
    }, found


def test_dev_needs_no_reviewer_on_its_deploys(github) -> None:
    api, answers, _ = github
    for key, value in copy.deepcopy(answers).items():
        answers[key.replace("/prod", "/dev")] = value
    answers[f"/repos/{REPO}/environments/dev"] = _environment("dev", reviewers=False)
    dev = load_stack_file(ROOT / "stacks" / "Pulumi.dev.yaml").config
    assert not dev.github.require_approval and check(GitHub("t", api), REPO, dev) == []


def test_the_command_needs_a_token_and_says_what_is_wrong_in_one_line(github, monkeypatch) -> None:
    api, answers, _ = github
    runner = CliRunner()
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    missing = runner.invoke(app, ["ci", "check", "--stack", "prod", "--api", api])
    assert missing.exit_code == 1 and "set GITHUB_TOKEN" in missing.output
    monkeypatch.setenv("GITHUB_TOKEN", "t")
    good = runner.invoke(app, ["ci", "check", "--stack", "prod", "--api", api])
    assert good.exit_code == 0, good.output
    answers[f"/repos/{REPO}/environments/prod"]["deployment_branch_policy"] = None
    bad = runner.invoke(app, ["ci", "check", "--stack", "prod", "--api", api])
    assert bad.exit_code == 1 and "prod: any branch may deploy" in bad.output and "Traceback" not in bad.output
