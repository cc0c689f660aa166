"""The CI paths as AWS and GitHub would see them, offline: the OIDC token every workflow job gets,
evaluated against the trust policy of the role it names; and every AWS call that preflight, the
migration Job, the teams Job and a promotion make, evaluated against the policies of the role
that makes it (recorded from real runs against moto, then judged by tests/iam_policy.py)."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import boto3
import botocore.client
import botocore.exceptions
import pytest
import yaml

from mlflow_platform import preflight
from mlflow_platform.config import load_stack_file

from .iam_policy import Request, allowed, decide
from .paths import ROOT, STACKS, captured

WORKFLOWS = ROOT / ".github" / "workflows"
REPOSITORY = "example-org/mlflow-platform"
ISSUER = "token.actions.githubusercontent.com"
ACCOUNT, REGION = "123456789012", "eu-west-1"  # the offline plan's and moto's
MANAGED = {"arn:aws:iam::aws:policy/PowerUserAccess": ROOT / "tests" / "aws_managed_policies" / "PowerUserAccess.json"}
NOT_MODELLED = {"arn:aws:iam::aws:policy/ReadOnlyAccess"}  # see tests/aws_managed_policies/README.md


# --- the evaluator, against AWS's documented examples --------------------------------------------


def test_an_explicit_deny_wins_over_any_allow() -> None:
    """IAM evaluation logic: "an explicit deny in any of these policies overrides the allow"."""
    allow = {"Statement": [{"Effect": "Allow", "Action": "iam:*", "Resource": "*"}]}
    deny = {"Statement": [{"Effect": "Deny", "Action": "iam:DeleteRole", "Resource": "arn:aws:iam::1:role/x"}]}
    assert decide(Request("iam:DeleteRole", "arn:aws:iam::1:role/x"), [allow, deny]) == "deny"
    assert decide(Request("iam:DeleteRole", "arn:aws:iam::1:role/y"), [allow, deny]) == "allow"
    assert decide(Request("s3:GetObject", "*"), [deny]) == "implicit"


def test_power_user_access_is_everything_but_iam_organizations_and_account() -> None:
    policy = json.loads(MANAGED["arn:aws:iam::aws:policy/PowerUserAccess"].read_text())
    assert allowed(Request("rds:DeleteDBInstance", "arn:aws:rds:eu-west-1:1:db:mlflow-prod"), [policy])
    assert allowed(Request("secretsmanager:GetSecretValue", "*"), [policy])
    assert allowed(Request("iam:ListRoles"), [policy])
    assert not allowed(Request("iam:GetRole", "arn:aws:iam::1:role/x"), [policy])
    assert not allowed(Request("IAM:CreateRole", "*"), [policy])  # action names match case-insensitively


def test_a_boundary_limits_what_the_identity_policy_allows() -> None:
    """The permissions-boundary doc's example: identity s3/ec2/iam, boundary s3/cloudwatch/ec2 ->
    effective s3 and ec2 only."""
    identity = {"Statement": [{"Effect": "Allow", "Action": ["s3:*", "ec2:*", "iam:*"], "Resource": "*"}]}
    boundary = {"Statement": [{"Effect": "Allow", "Action": ["s3:*", "cloudwatch:*", "ec2:*"], "Resource": "*"}]}
    assert allowed(Request("s3:PutObject"), [identity], boundary)
    assert not allowed(Request("iam:CreateUser"), [identity], boundary)
    assert not allowed(Request("cloudwatch:PutMetricData"), [identity], boundary)


def test_arns_match_part_by_part_and_condition_keys_ignore_case() -> None:
    """IAM condition operators: ArnEquals and ArnLike both take wildcards, and a wildcard stays
    within its ARN component; condition key names are case-insensitive."""
    policy = {
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": "arn:aws:iam::*:role/mlflow-dev-*",
                "Condition": {"ArnEquals": {"iam:PermissionsBoundary": "arn:aws:iam::*:policy/boundary"}},
            }
        ]
    }
    ok = {"IAM:permissionsboundary": "arn:aws:iam::123456789012:policy/boundary"}
    assert allowed(Request("iam:PassRole", "arn:aws:iam::123456789012:role/mlflow-dev-server", ok), [policy])
    # `*` in the account part cannot swallow the service part: a different service never matches
    assert not allowed(Request("iam:PassRole", "arn:aws:sts::123456789012:role/mlflow-dev-server", ok), [policy])
    assert not allowed(Request("iam:PassRole", "arn:aws:iam::123456789012:role/mlflow-prod-server", ok), [policy])


def test_conditions_need_their_key_and_unknown_operators_fail_loudly() -> None:
    policy = {
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": "*",
                "Condition": {"StringLike": {"kms:ViaService": "secretsmanager.*.amazonaws.com"}},
            }
        ]
    }
    via = {"kms:ViaService": "secretsmanager.eu-west-1.amazonaws.com"}
    assert allowed(Request("kms:Decrypt", "*", via), [policy])
    assert not allowed(Request("kms:Decrypt", "*", {"kms:ViaService": "s3.eu-west-1.amazonaws.com"}), [policy])
    assert not allowed(Request("kms:Decrypt", "*"), [policy])  # called directly: no kms:ViaService
    odd = {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"DateLessThan": {}}}]}
    with pytest.raises(NotImplementedError):
        decide(Request("s3:GetObject"), [odd])


# --- OIDC: the token each workflow job gets, against the trust of the role it names ----------------


def _expand(template: str, values: dict[str, list[str]]) -> list[str]:
    """`${{ matrix.stack }}-preview` for every value the workflow gives the expression."""
    match = re.search(r"\$\{\{\s*([\w.-]+)\s*\}\}", template)
    if not match:
        return [template]
    return [out for v in values[match.group(1)] for out in _expand(template.replace(match.group(0), v, 1), values)]


def _callers(name: str) -> list[str]:
    """The stacks a reusable workflow is called with (`with: stack:`) from the other workflows."""
    stacks = []
    for path in WORKFLOWS.glob("*.yml"):
        for job in (yaml.safe_load(path.read_text()).get("jobs") or {}).values():
            if str(job.get("uses", "")).endswith(f"/{name}"):
                stacks.append(job["with"]["stack"])
    return stacks


def _role_jobs() -> list[tuple[str, str, str, str]]:
    """(workflow/job, stack, GitHub `sub`, role purpose) for every job that assumes a CI role."""
    found = []
    for path in sorted(WORKFLOWS.glob("*.yml")):
        document = yaml.safe_load(path.read_text())
        for job_name, job in (document.get("jobs") or {}).items():
            roles = [
                s["with"]["role-to-assume"]
                for s in job.get("steps", [])
                if str(s.get("uses", "")).startswith("aws-actions/configure-aws-credentials")
            ]
            for role in roles:
                purpose = re.search(r"AWS_(\w+)_ROLE_ARN", role).group(1).lower()
                found += [(f"{path.name}/{job_name}", *pair, purpose) for pair in _subjects(path.name, job)]
    return found


def _repositories(workflow: str, stack: str) -> tuple[str, ...]:
    """Whose token a job carries: a reusable workflow's caller. promote-model.yml is called by the
    model repositories the stack lists; the others run in this repository."""
    if workflow == "promote-model.yml":
        return load_stack_file(ROOT / "stacks" / f"Pulumi.{stack}.yaml").config.github.promotion_repositories
    return (REPOSITORY,)


def _subjects(workflow: str, job: dict) -> list[tuple[str, str]]:
    """GitHub's documented default `sub`: the environment when the job names one, else the event
    (pull_request) or the ref (https://docs.github.com/en/actions/reference/security/oidc)."""
    values = {
        "matrix.stack": (job.get("strategy") or {}).get("matrix", {}).get("stack", []),
        "inputs.stack": _callers(workflow),
        "inputs.environment": STACKS,  # promote-model is called by model repositories, per environment
    }
    environment = job.get("environment")
    if environment is None:
        raise AssertionError(f"{workflow}: a role-assuming job without `environment:` gets a branch subject")
    stacks = values["matrix.stack"] or values["inputs.stack"] or values["inputs.environment"]
    return [
        (stack, f"repo:{repository}:environment:{name}")
        for stack in stacks
        for repository in _repositories(workflow, stack)
        for name in _expand(str(environment), {**values, "matrix.stack": [stack], "inputs.stack": [stack],
                                               "inputs.environment": [stack]})
    ]  # fmt: skip


def _trust(stack: str, purpose: str) -> tuple[str, str]:
    role = captured(stack).one("aws:iam/role:Role", f"ci-{purpose}")
    return role.inputs["assumeRolePolicy"], role.inputs["name"]


def _token(sub: str, provider: str) -> Request:
    return Request(
        "sts:AssumeRoleWithWebIdentity",
        context={f"{ISSUER}:sub": sub, f"{ISSUER}:aud": "sts.amazonaws.com"},
        principal=provider,
    )


def _provider(stack: str) -> str:
    created = captured(stack).one("aws:iam/openIdConnectProvider:OpenIdConnectProvider", "ci-oidc")
    return created.outputs["arn"]


def test_every_role_assuming_job_is_found() -> None:
    jobs = {(job, purpose) for job, _, _, purpose in _role_jobs()}
    assert jobs == {
        ("pull-request.yml/preview", "preview"),
        ("drift.yml/drift", "drift"),
        ("deploy-stack.yml/up", "deploy"),
        ("deploy-stack.yml/smoke", "deploy"),
        ("promote-model.yml/promote", "promote"),
    }


@pytest.mark.parametrize(("job", "stack", "sub", "purpose"), _role_jobs(), ids=lambda v: str(v))
def test_each_jobs_token_assumes_its_role_and_no_other(job: str, stack: str, sub: str, purpose: str) -> None:
    provider = _provider(stack)
    trust, name = _trust(stack, purpose)
    assert allowed(_token(sub, provider), [trust]), f"{job}: {name} refuses {sub}"
    for other in ("preview", "drift", "deploy", "promote"):
        if other != purpose:
            other_trust, other_name = _trust(stack, other)
            assert not allowed(_token(sub, provider), [other_trust]), f"{job}'s token also assumes {other_name}"
    for other_stack in STACKS:
        if other_stack != stack:
            other_trust, other_name = _trust(other_stack, purpose)
            assert not allowed(_token(sub, _provider(other_stack)), [other_trust]), f"{job} reaches {other_name}"


def test_a_token_for_another_audience_or_a_branch_is_refused() -> None:
    trust, _ = _trust("prod", "deploy")
    provider = _provider("prod")
    good = f"repo:{REPOSITORY}:environment:prod"
    wrong_audience = Request(
        "sts:AssumeRoleWithWebIdentity", context={f"{ISSUER}:sub": good, f"{ISSUER}:aud": "x"}, principal=provider
    )
    assert not allowed(wrong_audience, [trust])
    for sub in (
        f"repo:{REPOSITORY}:ref:refs/heads/main",
        f"repo:{REPOSITORY}:pull_request",
        "repo:evil/fork:environment:prod",
    ):
        assert not allowed(_token(sub, provider), [trust]), sub


# --- own policies: every call a role makes, recorded from a real run ------------------------------


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, dict]]:
    """(IAM service prefix, operation, parameters) of every AWS API call made through boto3."""
    calls: list[tuple[str, str, dict]] = []
    original = botocore.client.BaseClient._make_api_call

    def record(self, operation, params):
        calls.append((self.meta.service_model.signing_name, operation, dict(params)))
        return original(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", record)
    return calls


#: Operations authorized as another action (AWS's Service Authorization Reference).
AUTHORIZED_AS = {("s3", "HeadBucket"): "s3:ListBucket"}
#: Calls no policy can refuse (sts:GetCallerIdentity needs no permission).
UNCONDITIONAL = {("sts", "GetCallerIdentity")}


def _requests(service: str, operation: str, params: dict) -> list[Request]:
    """The authorization requests one API call makes: its action on each resource it names."""
    action = AUTHORIZED_AS.get((service, operation), f"{service}:{operation}")
    arn = f"arn:aws:{service}:{REGION}:{ACCOUNT}"
    if service == "iam" and "RoleName" in params:
        return [Request(action, f"arn:aws:iam::{ACCOUNT}:role/{params['RoleName']}")]
    if service == "rds" and operation == "CreateDBSnapshot":
        # CreateDBSnapshot authorizes on the instance and the new snapshot; tags on create need
        # AddTagsToResource too (Service Authorization Reference for Amazon RDS).
        snapshot = f"{arn}:snapshot:{params['DBSnapshotIdentifier']}"
        return [
            Request(action, f"{arn}:db:{params['DBInstanceIdentifier']}"),
            Request(action, snapshot),
            Request("rds:AddTagsToResource", snapshot),
        ]
    if service == "rds" and "DBSnapshotIdentifier" in params:
        return [Request(action, f"{arn}:snapshot:{params['DBSnapshotIdentifier']}")]
    if service == "secretsmanager":
        return [Request(action, f"{arn}:secret:{params.get('SecretId') or params['Name']}-AbCdEf")]
    if service == "dynamodb":
        return [Request(action, f"{arn}:table/{params['TableName']}")]
    return [Request(action, "*")]


def _policies_of(stack, role_name: str) -> tuple[list, object]:
    """A role's identity policies (inline and attached) and its boundary, as the plan creates them
    (``stack``: a stack name, or a plan already captured)."""
    capture = captured(stack) if isinstance(stack, str) else stack
    role = next(r for r in capture.of_type("aws:iam/role:Role") if r.inputs["name"] == role_name)
    inline = [
        p.inputs["policy"]
        for p in capture.of_type("aws:iam/rolePolicy:RolePolicy")
        if p.property_dependencies.get("role") == [role.urn]
    ]
    attached = [
        a.inputs["policyArn"]
        for a in capture.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if a.property_dependencies.get("role") == [role.urn]
    ]
    unknown = set(attached) - set(MANAGED) - NOT_MODELLED
    assert not unknown, f"{role_name} attaches {unknown}: copy it into tests/aws_managed_policies"
    managed = [MANAGED[a].read_text() for a in attached if a in MANAGED]
    boundary = None
    if role.property_dependencies.get("permissionsBoundary"):
        boundary = capture.one("aws:iam/policy:Policy", "boundary-policy").inputs["policy"]
    return inline + managed, boundary


def _refused(calls, stack: str, role_name: str) -> list[str]:
    identity, boundary = _policies_of(stack, role_name)
    return [
        f"{r.action} on {r.resource}"
        for service, operation, params in calls
        if (service, operation) not in UNCONDITIONAL
        for r in _requests(service, operation, params)
        if not allowed(r, identity, boundary)
    ]


def _in_account(tmp_path: Path, base: str) -> Path:
    document = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{base}.yaml").read_text())
    document["config"]["aws:allowedAccountIds"] = [ACCOUNT]
    path = tmp_path / f"Pulumi.{base}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.parametrize("base", ["prod", "dev", "staging"])
def test_every_call_preflight_makes_is_allowed_to_the_deploy_role(
    tmp_path: Path, aws_api: str, monkeypatch, recorded, base: str
) -> None:
    """deploy-stack.yml runs preflight under the deploy role before `pulumi up`: a call its own
    policies refuse stops every deploy ("could not check")."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_api)
    path = _in_account(tmp_path, base)
    config = load_stack_file(path).config
    account = preflight.Account(REGION)
    account.iam.create_role(RoleName=f"mlflow-{base}-ci-deploy", AssumeRolePolicyDocument="{}")
    if config.cluster and config.cluster.name:
        account.eks.create_cluster(name=config.cluster.name, roleArn=f"arn:aws:iam::{ACCOUNT}:role/eks",
                                   resourcesVpcConfig={}, accessConfig={"authenticationMode": "API"})  # fmt: skip
    recorded.clear()  # the seeding above is the test's, not preflight's
    try:
        preflight.run_checks(path, config, REGION)
        if config.cluster.name:  # moto omits accessConfig: answer API mode so the entry check goes on
            api_mode = {"cluster": {"accessConfig": {"authenticationMode": "API_AND_CONFIG_MAP"}}}
            monkeypatch.setattr(account.eks, "describe_cluster", lambda **_: api_mode)
            with contextlib.suppress(botocore.exceptions.ClientError):  # moto has no access-entry API;
                preflight.check_access_entry(path, config, account)  # the calls are recorded before it answers
        made = list(recorded)
    finally:
        account.iam.delete_role(RoleName=f"mlflow-{base}-ci-deploy")
        if config.cluster and config.cluster.name:
            account.eks.delete_cluster(name=config.cluster.name)
    # the recording saw the run, and for an existing cluster the read of the deploy role itself
    assert {"ListRoles", *(("GetRole",) if config.cluster.name else ())} <= {op for _, op, _ in made}
    assert _refused(made, base, f"mlflow-{base}-ci-deploy") == []


def test_the_migration_jobs_snapshot_is_allowed_to_the_migration_role(aws_api: str, monkeypatch, recorded) -> None:
    from mlflow_platform.database.backup import snapshot_rds

    monkeypatch.setenv("MLFLOW_PLATFORM_RDS_ENDPOINT_URL", aws_api)
    rds = boto3.client("rds", region_name=REGION, endpoint_url=aws_api)
    rds.create_db_instance(DBInstanceIdentifier="mlflow-prod", DBInstanceClass="db.t4g.small", Engine="postgres",
                           MasterUsername="x", MasterUserPassword="x" * 12, AllocatedStorage=20)  # fmt: skip
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    recorded.clear()
    try:
        snapshot_rds("mlflow-prod", name="mlflow-prod-upgrade-3-17-2-to-3-18-0", wait=True)
        made = list(recorded)
    finally:
        rds.delete_db_instance(DBInstanceIdentifier="mlflow-prod", SkipFinalSnapshot=True)
    assert {op for _, op, _ in made} >= {"CreateDBSnapshot", "DescribeDBSnapshots"}
    assert _refused(made, "prod", "mlflow-prod-migration") == []
    # and nothing beyond: a snapshot of another instance, or outside the upgrade prefix, is refused
    stray = [("rds", "CreateDBSnapshot", {"DBInstanceIdentifier": "mlflow-dev", "DBSnapshotIdentifier": "x"})]
    assert _refused(stray, "prod", "mlflow-prod-migration")


def test_the_teams_jobs_password_secrets_are_allowed_to_the_teams_role(aws_api: str, monkeypatch, recorded) -> None:
    from mlflow_platform.infra.components.iam import team_secrets_prefix
    from mlflow_platform.team_passwords import SecretsManagerPasswords

    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_api)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    capture = _with_teams("staging")
    store = SecretsManagerPasswords(team_secrets_prefix("staging"))
    store.put("ana", "first")
    store.put("ana", "second")
    assert store.get("ana") == "second"
    assert _refused(recorded, capture, "mlflow-staging-teams") == []
    other = [("secretsmanager", "GetSecretValue", {"SecretId": "mlflow/staging/database"})]
    assert _refused(other, capture, "mlflow-staging-teams")  # the database secret stays out of reach


def _with_teams(stack: str):
    from mlflow_platform import plan

    from .paths import overrides_for

    teams = {"mlflow-platform:teams": [{"name": "search", "members": ["ana"]}]}
    return plan.run(
        ROOT / "stacks" / f"Pulumi.{stack}.yaml", project_root=ROOT, overrides={**overrides_for(stack), **teams}
    )


def test_a_promotion_under_the_lock_is_allowed_to_the_promote_role(aws_api: str, monkeypatch, recorded) -> None:
    from mlflow_platform.runbooks.locks import dynamodb_lock

    monkeypatch.setenv("MLFLOW_PLATFORM_DYNAMODB_ENDPOINT_URL", aws_api)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    table = captured("prod").one("aws:dynamodb/table:Table").inputs["name"]
    dynamo = boto3.client("dynamodb", region_name=REGION, endpoint_url=aws_api)
    dynamo.create_table(TableName=table, KeySchema=[{"AttributeName": "lock_key", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "lock_key", "AttributeType": "S"}],
                        BillingMode="PAY_PER_REQUEST")  # fmt: skip
    recorded.clear()
    try:
        with dynamodb_lock(table, "model/search-ranker", ttl=60, timeout=5):
            pass
        made = list(recorded)
    finally:
        dynamo.delete_table(TableName=table)
    assert {op for _, op, _ in made} >= {"PutItem", "DeleteItem"}
    assert _refused(made, "prod", "mlflow-prod-ci-promote") == []


@pytest.mark.parametrize("stack", STACKS)
def test_drift_may_read_exactly_its_stacks_secrets_and_previews_none(stack: str) -> None:
    """A refresh reads each SecretVersion (GetSecretValue, and kms:Decrypt through Secrets Manager);
    ReadOnlyAccess grants neither, so the drift role's own policy must, for this stack only."""
    drift, _ = _policies_of(stack, f"mlflow-{stack}-ci-drift")
    preview, _ = _policies_of(stack, f"mlflow-{stack}-ci-preview")
    arn = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret"
    via = {"kms:ViaService": f"secretsmanager.{REGION}.amazonaws.com"}
    for secret in ("database", "admin"):
        assert allowed(Request("secretsmanager:GetSecretValue", f"{arn}:mlflow/{stack}/{secret}-AbCdEf"), drift)
        assert not allowed(Request("secretsmanager:GetSecretValue", f"{arn}:mlflow/{stack}/{secret}-AbCdEf"), preview)
    assert allowed(Request("kms:Decrypt", f"arn:aws:kms:{REGION}:{ACCOUNT}:key/k", via), drift)
    assert not allowed(Request("kms:Decrypt", f"arn:aws:kms:{REGION}:{ACCOUNT}:key/k"), drift)  # only via SM
    other = next(s for s in STACKS if s != stack)
    assert not allowed(Request("secretsmanager:GetSecretValue", f"{arn}:mlflow/{other}/database-AbCdEf"), drift)
