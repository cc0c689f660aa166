"""Teams in a deployed stack, under Pulumi's mocks: the rendered server (workspaces, default
permission) for every stack, and the teams Job with its role, network policy and teams file."""

from __future__ import annotations

import configparser
import json

import pytest
from pydantic import TypeAdapter

from mlflow_platform.config import TeamConfig
from mlflow_platform.team_passwords import SecretsManagerPasswords

from .paths import STACKS, captured
from .test_infra_program import run_with

TEAMS = [
    {"name": "search", "admins": ["search-lead"], "members": ["ana"]},
    {"name": "ranking", "members": ["ben"], "readers": ["search"]},
]
JOB = "kubernetes:batch/v1:Job"


def _server(capture) -> tuple[list[str], dict]:
    deployment = capture.one("kubernetes:apps/v1:Deployment", "tracking-deployment").inputs
    ini = configparser.ConfigParser()
    ini.read_string(capture.one("kubernetes:core/v1:ConfigMap", "tracking-auth").inputs["data"]["basic_auth.ini"])
    return deployment["spec"]["template"]["spec"]["containers"][0]["command"], dict(ini["mlflow"])


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_renders_the_intended_workspace_and_default_permission(stack: str) -> None:
    command, ini = _server(captured(stack))
    assert "--enable-workspaces" not in command and ini["default_permission"] == "READ"  # no teams: as before
    assert not [r for r in captured(stack).of_type(JOB) if r.name == "teams-job"]
    command, ini = _server(run_with(stack, teams=TEAMS))
    assert "--enable-workspaces" in command and ini["default_permission"] == "NO_PERMISSIONS"


def test_the_teams_job_runs_after_the_rollout_with_the_stacks_teams() -> None:
    capture = run_with("prod", teams=TEAMS)
    job = capture.one(JOB, "teams-job")
    assert capture.one(JOB, "tracking-release").urn in job.dependencies
    pod = job.inputs["spec"]["template"]["spec"]
    command = pod["containers"][0]["command"]
    assert command[:3] == ["mlflow-platform", "teams", "sync"] and "--prune" not in command
    assert command[command.index("--secrets-prefix") + 1] == "mlflow-prod/users/"
    assert pod["serviceAccountName"] == "mlflow-teams" and pod["automountServiceAccountToken"] is False
    mounted = capture.one("kubernetes:core/v1:ConfigMap", "teams-teams").inputs["data"]["teams.json"]
    parsed = TypeAdapter(tuple[TeamConfig, ...]).validate_python(json.loads(mounted))
    assert parsed == TypeAdapter(tuple[TeamConfig, ...]).validate_python(TEAMS)
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-server"
    # A changed team is a new Job (so its log shows the change), an unchanged one is not re-run.
    changed = run_with("prod", teams=[*TEAMS, {"name": "ads", "members": ["cy"]}]).one(JOB, "teams-job")
    assert changed.inputs["metadata"]["name"] != job.inputs["metadata"]["name"]
    assert (
        run_with("prod", teams=TEAMS).one(JOB, "teams-job").inputs["metadata"]["name"] == job.inputs["metadata"]["name"]
    )


def test_the_teams_job_may_reach_the_server_and_its_secrets_only() -> None:
    capture = run_with("prod", teams=TEAMS)
    role = capture.one("aws:iam/role:Role", "teams-role-role")
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]["Condition"]["StringEquals"]
    assert "system:serviceaccount:mlflow:mlflow-teams" in trust.values()
    account = capture.one("kubernetes:core/v1:ServiceAccount", "teams-sa").inputs
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == role.outputs["arn"]
    [statement] = json.loads(capture.one("aws:iam/rolePolicy:RolePolicy", "teams-role-policy").inputs["policy"])[
        "Statement"
    ]
    assert statement["Resource"].endswith(":secret:mlflow-prod/users/*")
    assert not [a for a in statement["Action"] if a.endswith(("*", "DeleteSecret"))]
    boundary = json.loads(capture.one("aws:iam/policy:Policy", "boundary-policy").inputs["policy"])
    assert set(statement["Action"]) <= {a for s in boundary["Statement"] for a in s["Action"]}
    server = capture.one("kubernetes:networking.k8s.io/v1:NetworkPolicy", "tracking-netpol").inputs["spec"]
    peers = [p for rule in server["ingress"] for p in rule["from"]]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "mlflow-teams"}}} in peers
    own = capture.one("kubernetes:networking.k8s.io/v1:NetworkPolicy", "teams-netpol").inputs["spec"]
    assert own["ingress"] == [] and own["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "mlflow-teams"}


def test_generated_passwords_go_to_one_secret_per_user(moto_credentials) -> None:
    import boto3
    from moto import mock_aws

    with mock_aws():
        store = SecretsManagerPasswords("mlflow-prod/users/")
        assert store.get("ana") is None
        store.put("ana", "first-password")
        store.put("ana", "second-password")
        assert store.get("ana") == "second-password"
        secret = boto3.client("secretsmanager").describe_secret(SecretId="mlflow-prod/users/ana")
        assert {"Key": "managed-by", "Value": "mlflow-platform"} in secret["Tags"]


def test_the_scheduled_runbooks_cover_every_workspace_where_teams_exist() -> None:
    def commands(capture) -> list[list[str]]:
        cronjobs = capture.of_type("kubernetes:batch/v1:CronJob")
        return [
            c.inputs["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"] for c in cronjobs
        ]

    assert commands(run_with("prod", teams=TEAMS)) and all(
        "--all-workspaces" in c for c in commands(run_with("prod", teams=TEAMS))
    )
    assert not any("--all-workspaces" in c for c in commands(captured("prod")))
