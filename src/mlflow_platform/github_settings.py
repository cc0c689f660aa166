"""The GitHub side of the CI roles, read through GitHub's REST API (read-only). The AWS trust
policies bind each role to a GitHub Environment, and nothing in AWS can tell which branch a job
runs on. So the Environments themselves must keep the other branches out:
- the deploy and drift Environments deploy from `main` only ("Deployment branches and tags");
- PR previews run the pull request's own code with a token that decrypts the stack's config, so
  each `<env>-preview` Environment needs a reviewer;
- a stack with `github.requireApproval` needs a reviewer on its deploy Environment, who may not
  approve their own run;
- the Pulumi token is an Environment secret, never a repository or organization secret, which
  every PR job could read (https://docs.github.com/en/actions/reference/workflows-and-actions/deployments-and-environments).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import requests

from .config import StackConfig
from .infra.components.iam import ci_environments

API = "https://api.github.com"
TOKEN_SECRET = "PULUMI_ACCESS_TOKEN"


@dataclass(frozen=True)
class Finding:
    environment: str
    problem: str


class GitHub:
    """GET requests to the REST API with a token (`GITHUB_TOKEN`; needs repository administration: read)."""

    def __init__(self, token: str, api: str = API):
        self._api = api.rstrip("/")
        self._session = requests.Session()
        self._session.headers.update(
            {
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
            }
        )

    def get(self, path: str, **params) -> dict | None:
        """The JSON answer, or None for 404 (an Environment that was never created)."""
        answer = self._session.get(f"{self._api}{path}", params=params, timeout=30)
        if answer.status_code == 404:
            return None
        answer.raise_for_status()
        return answer.json()

    def secret_names(self, path: str) -> set[str] | None:
        """Every secret's name, page by page (GitHub answers 30 a page unless asked for up to 100);
        None when the list cannot be read (404: no such environment, or a token without access)."""
        names: set[str] = set()
        for page in range(1, 100):
            answer = self.get(path, per_page=100, page=page)
            if answer is None:
                return None
            listed = answer.get("secrets", [])
            names |= {s["name"] for s in listed}
            if len(listed) < 100:
                return names
        return names


def _branches_main_only(github: GitHub, repo: str, name: str, environment: dict) -> str | None:
    policy = environment.get("deployment_branch_policy")
    if not policy:
        return "any branch may deploy: set Deployment branches to the selected branch `main`"
    if not policy.get("custom_branch_policies"):
        return "any protected branch may deploy: select the branch `main` only"
    path = f"/repos/{repo}/environments/{quote(name, safe='')}/deployment-branch-policies"
    listed = github.get(path, per_page=100) or {}
    names = sorted(f"{p.get('type', 'branch')}:{p['name']}" for p in listed.get("branch_policies", []))
    names = [n.removeprefix("branch:") for n in names]
    return None if names == ["main"] else f"deploys from {names}: allow `main` only"


def _reviewed(environment: dict, *, no_self_review: bool) -> str | None:
    rules = [r for r in environment.get("protection_rules", []) if r.get("type") == "required_reviewers"]
    if not rules or not rules[0].get("reviewers"):
        return "no required reviewer"
    if no_self_review and not rules[0].get("prevent_self_review"):
        return "a reviewer may approve their own run: turn on `Prevent self-review`"
    return None


def check(github: GitHub, repo: str, config: StackConfig) -> list[Finding]:
    """What keeps other branches and pull requests away from this stack's roles and token."""
    bound = ci_environments(config.github, config.environment)
    findings: list[Finding] = []
    for scope, path in (("repository", "actions/secrets"), ("organization", "actions/organization-secrets")):
        names = github.secret_names(f"/repos/{repo}/{path}")
        if names is None:
            findings.append(Finding(f"({scope})", f"cannot list the {scope} secrets: the token needs secrets: read"))
        elif TOKEN_SECRET in names:
            article = "an" if scope == "organization" else "a"
            message = f"{TOKEN_SECRET} is {article} {scope} secret: any PR job can read it; set it on each Environment"
            findings.append(Finding(f"({scope})", message))
    for purpose, name in bound.items():
        environment = github.get(f"/repos/{repo}/environments/{quote(name, safe='')}")
        if environment is None:
            findings.append(Finding(name, "does not exist: a workflow naming it would create it unprotected"))
            continue
        problems = [_environment_problem(github, repo, name, environment, purpose, config)]
        secrets = github.secret_names(f"/repos/{repo}/environments/{quote(name, safe='')}/secrets") or set()
        if TOKEN_SECRET not in secrets:
            problems.append(f"has no {TOKEN_SECRET} secret")
        findings += [Finding(name, p) for p in problems if p]
    return findings


def _environment_problem(github: GitHub, repo: str, name: str, environment: dict, purpose: str, config) -> str | None:
    if purpose == "preview":
        return _reviewed(environment, no_self_review=False)
    if problem := _branches_main_only(github, repo, name, environment):
        return problem
    if purpose == "deploy" and config.github.require_approval:
        return _reviewed(environment, no_self_review=True)
    return None
