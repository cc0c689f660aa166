"""The policy pack: every rule passes on the real stacks and fails when one real property changes.

Failing cases are the mocked program's own resources with one property altered (no hand-written
stand-ins), evaluated the way `pulumi preview --policy-pack` would.
"""

from __future__ import annotations

import copy
import json
import runpy

import pytest
import yaml

from mlflow_platform import plan, policy_check

from .paths import ROOT, STACKS, captured

POLICIES = policy_check.load_policies()


def violations(capture: plan.Capture, stack: str, rule: str) -> list[policy_check.Violation]:
    policy = [p for p in POLICIES if p.name == rule]
    assert policy, f"no rule {rule}"
    return policy_check.evaluate(capture, policy, policy_check.load_policy_config(ROOT, stack))


def changed(stack: str, type_: str, edit, name: str | None = None) -> plan.Capture:
    """A deep copy of the stack's capture with one resource edited in place by ``edit``, or removed
    when ``edit`` returns False (None, what an in-place edit returns, keeps it)."""
    capture = copy.deepcopy(captured(stack))
    target = capture.one(type_, name)
    result = edit(target)
    if result is False:
        capture.resources.remove(target)
    return capture


def container(resource, index: int = 0) -> dict:
    spec = resource.inputs["spec"]
    return spec["template"]["spec"]["containers"][index]


def set_env(resource, name: str, entry: dict) -> None:
    env = container(resource)["env"]
    env[:] = [e for e in env if e["name"] != name] + [{"name": name, **entry}]


def bucket_name(stack: str) -> str:
    return captured(stack).outputs["bucketName"]


def on_artifact_bucket(stack: str, type_: str) -> str:
    return next(r.name for r in captured(stack).of_type(type_) if r.inputs.get("bucket") == bucket_name(stack))


DEPLOYMENT = "kubernetes:apps/v1:Deployment"
CASES = {
    "alb-sso-login-on-browser-paths": (
        "staging",
        "aws:lb/listener:Listener",
        lambda r: r.inputs.update(defaultActions=[a for a in r.inputs["defaultActions"] if a["type"] == "forward"]),
        "lb-https",
    ),
    "s3-kms-encryption": (
        "prod",
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        lambda r: r.inputs["rules"][0]["applyServerSideEncryptionByDefault"].update(sseAlgorithm="AES256"),
        "artifacts-bucket-encryption",
    ),
    "s3-public-access-blocked": (
        "prod",
        "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
        lambda r: r.inputs.update(restrictPublicBuckets=False),
        "artifacts-bucket-public-access",
    ),
    "s3-tls-only": (
        "prod",
        "aws:s3/bucketPolicy:BucketPolicy",
        lambda r: r.inputs.update(policy=json.dumps({"Version": "2012-10-17", "Statement": []})),
        "artifacts-policy",
    ),
    "s3-versioning": (
        "prod",
        "aws:s3/bucketVersioning:BucketVersioning",
        lambda r: r.inputs["versioningConfiguration"].update(status="Suspended"),
        None,
    ),
    "s3-lifecycle": (
        "prod",
        "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
        lambda r: r.inputs.update(rules=[x for x in r.inputs["rules"] if x["id"] != "expire-tmp"]),
        "artifacts-lifecycle",
    ),
    "s3-access-logging": ("prod", "aws:s3/bucketLogging:BucketLogging", lambda r: False, None),
    "rds-encrypted-private": (
        "prod",
        "aws:rds/instance:Instance",
        lambda r: r.inputs.update(publiclyAccessible=True),
        None,
    ),
    "rds-backup-retention": (
        "prod",
        "aws:rds/instance:Instance",
        lambda r: r.inputs.update(backupRetentionPeriod=7.0),
        None,
    ),
    "rds-production-ha": ("prod", "aws:rds/instance:Instance", lambda r: r.inputs.update(multiAz=False), None),
    "rds-force-ssl": (
        "prod",
        "aws:rds/parameterGroup:ParameterGroup",
        lambda r: r.inputs["parameters"][0].update(value="0"),
        None,
    ),
    "rds-password-not-plaintext": (
        "prod",
        "aws:rds/instance:Instance",
        lambda r: r.property_dependencies.pop("password"),
        None,
    ),
    "alb-https-only": (
        "prod",
        "aws:lb/listener:Listener",
        lambda r: r.inputs.update(sslPolicy="ELBSecurityPolicy-2016-08"),
        "lb-https",
    ),
    "alb-access-logs": (
        "prod",
        "aws:lb/loadBalancer:LoadBalancer",
        lambda r: r.inputs["accessLogs"].update(enabled=False),
        None,
    ),
    "alb-production-deletion-protection": (
        "prod",
        "aws:lb/loadBalancer:LoadBalancer",
        lambda r: r.inputs.update(enableDeletionProtection=False),
        None,
    ),
    "no-public-database-port": (
        "prod",
        "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
        lambda r: r.inputs.update(cidrIpv4="0.0.0.0/0"),
        "database-from-server",
    ),
    "iam-no-star-on-star": (
        "prod",
        "aws:iam/rolePolicy:RolePolicy",
        lambda r: r.inputs.update(
            policy=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
            )
        ),
        "server-role-artifacts",
    ),
    "iam-workload-roles-bounded": (
        "prod",
        "aws:iam/role:Role",
        lambda r: r.inputs.pop("permissionsBoundary"),
        "server-role-role",
    ),
    "iam-ci-roles-contained": (
        "prod",
        "aws:iam/rolePolicy:RolePolicy",
        lambda r: r.inputs.update(policy=r.inputs["policy"].replace("mlflow-prod-*", "mlflow-*")),
        "ci-deploy-iam",
    ),
    "server-role-prefix-scoped": (
        "prod",
        "aws:iam/rolePolicy:RolePolicy",
        lambda r: r.inputs.update(
            policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {**s, "Resource": s["Resource"].split("/")[0] + "/*"} if s["Sid"] == "ObjectsUnderPrefix" else s
                        for s in json.loads(r.inputs["policy"])["Statement"]
                    ],
                }
            )
        ),
        "server-role-artifacts",
    ),
    "k8s-hardened-containers": (
        "prod",
        DEPLOYMENT,
        lambda r: container(r)["securityContext"].update(readOnlyRootFilesystem=False),
        None,
    ),
    "k8s-resources-set": ("prod", DEPLOYMENT, lambda r: container(r)["resources"].pop("limits"), None),
    "k8s-probes-set": ("prod", DEPLOYMENT, lambda r: container(r).pop("readinessProbe"), None),
    "k8s-production-replicas": (
        "prod",
        "kubernetes:autoscaling/v2:HorizontalPodAutoscaler",
        lambda r: r.inputs["spec"].update(minReplicas=1.0),
        None,
    ),
    "k8s-ingress-narrow": (
        "prod",
        "kubernetes:networking.k8s.io/v1:NetworkPolicy",
        lambda r: r.inputs["spec"]["ingress"][0].update({"from": [{"ipBlock": {"cidr": "10.30.0.0/16"}}]}),
        "tracking-netpol",
    ),
    "k8s-hpa-owns-replicas": ("prod", DEPLOYMENT, lambda r: r.inputs["spec"].update(replicas=2.0), None),
    "k8s-no-loadbalancer-service": (
        "prod",
        "kubernetes:core/v1:Service",
        lambda r: r.inputs["spec"].update(type="LoadBalancer"),
        None,
    ),
    "k8s-no-inline-secrets": (
        "prod",
        "kubernetes:batch/v1:Job",
        lambda r: set_env(r, "PGPASSWORD", {"value": "hunter2hunter2"}),
        "tracking-migrate",
    ),
    "k8s-cronjobs-safe": (
        "prod",
        "kubernetes:batch/v1:CronJob",
        lambda r: r.inputs["spec"].update(concurrencyPolicy="Allow"),
        "runbooks-gc",
    ),
    "mlflow-runbooks-scheduled": ("prod", "kubernetes:batch/v1:CronJob", lambda r: False, "runbooks-reap-stuck-runs"),
    "monitoring-dashboard-and-capacity": (
        "prod",
        "aws:cloudwatch/metricAlarm:MetricAlarm",
        lambda r: False,  # the artifact bucket's size alarm removed
        "monitoring-artifact-store-size",
    ),
    "mlflow-teams-closed-by-default": (
        "prod",
        DEPLOYMENT,
        lambda r: container(r)["command"].append("--enable-workspaces"),
        None,
    ),
    "mlflow-basic-auth": (
        "prod",
        DEPLOYMENT,
        lambda r: container(r).update(
            command=[a for a in container(r)["command"] if a not in ("--app-name", "platform-auth")]
        ),
        None,
    ),
    "mlflow-auth-db-postgres": (
        "prod",
        "kubernetes:core/v1:ConfigMap",
        lambda r: r.inputs["data"].update(
            {"basic_auth.ini": "[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///basic_auth.db\n"}
        ),
        None,
    ),
    "mlflow-secrets-from-secrets": (
        "prod",
        DEPLOYMENT,
        lambda r: set_env(r, "MLFLOW_FLASK_SERVER_SECRET_KEY", {"value": "not-a-secret"}),
        None,
    ),
    "mlflow-db-verified-least-privilege": (
        "prod",
        DEPLOYMENT,
        lambda r: container(r).update(
            command=[a.replace("sslmode=verify-full", "sslmode=require") for a in container(r)["command"]]
        ),
        None,
    ),
    "mlflow-keep-alive-exceeds-alb-idle": (
        "prod",
        "aws:lb/loadBalancer:LoadBalancer",
        lambda r: r.inputs.update(idleTimeout=120.0),
        None,
    ),
    "mlflow-connection-budget": (
        "prod",
        DEPLOYMENT,
        lambda r: set_env(r, "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE", {"value": "40"}),
        None,
    ),
    "mlflow-allowed-hosts": (
        "prod",
        DEPLOYMENT,
        lambda r: set_env(r, "MLFLOW_SERVER_ALLOWED_HOSTS", {"value": "localhost"}),
        None,
    ),
    "mlflow-database-uri-clean": (
        "prod",
        DEPLOYMENT,
        lambda r: container(r)["command"].__setitem__(
            container(r)["command"].index("--backend-store-uri") + 1,
            container(r)["command"][container(r)["command"].index("--backend-store-uri") + 1] + "&pool_size=20",
        ),
        None,
    ),
}


def test_every_rule_has_a_failing_case() -> None:
    assert {p.name for p in POLICIES} == set(CASES)


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_passes_every_mandatory_rule(stack: str) -> None:
    found = policy_check.evaluate(captured(stack), POLICIES, policy_check.load_policy_config(ROOT, stack))
    assert [v for v in found if v.mandatory] == []


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_passes_on_the_real_stack_and_fails_with_one_property_changed(rule: str) -> None:
    stack, type_, edit, name = CASES[rule]
    assert violations(captured(stack), stack, rule) == []
    broken = violations(changed(stack, type_, edit, name), stack, rule)
    assert broken, f"{rule} did not notice the change"
    assert all(v.policy == rule and v.mandatory and v.remediation for v in broken)


def test_production_only_rules_do_not_apply_to_dev() -> None:
    dev_db = captured("dev").one("aws:rds/instance:Instance").inputs
    assert dev_db["multiAz"] is False and dev_db["deletionProtection"] is False
    for rule in ("rds-production-ha", "alb-production-deletion-protection", "k8s-production-replicas"):
        assert violations(captured("dev"), "dev", rule) == []


def test_thresholds_come_from_policy_config() -> None:
    staging = captured("staging")
    assert staging.one("aws:rds/instance:Instance").inputs["backupRetentionPeriod"] == 7
    assert policy_check.evaluate(
        staging,
        [p for p in POLICIES if p.name == "rds-backup-retention"],
        {"rds-backup-retention": {"minimumDays": 14}},
    )
    assert not policy_check.evaluate(
        staging,
        [p for p in POLICIES if p.name == "rds-backup-retention"],
        {"rds-backup-retention": {"enforcementLevel": "disabled", "minimumDays": 14}},
    )


def test_every_rule_is_documented() -> None:
    for policy in POLICIES:
        assert policy.name and policy.description and policy.remediation_steps, policy.name
        assert policy.enforcement_level is not None, policy.name


def test_main_builds_the_pack_with_every_rule_without_starting_a_server(monkeypatch: pytest.MonkeyPatch) -> None:
    import pulumi_policy

    built = {}

    class RecordingPack:  # stands in for PolicyPack, whose constructor serves gRPC and blocks
        def __init__(self, name, policies, enforcement_level=None, **kwargs):
            built.update(name=name, policies=policies, enforcement_level=enforcement_level)

    monkeypatch.setattr(pulumi_policy, "PolicyPack", RecordingPack)
    runpy.run_path(str(ROOT / "policies" / "__main__.py"), run_name="__main__")
    assert built["name"] == "mlflow-platform"
    assert [p.name for p in built["policies"]] == [p.name for p in POLICIES]
    assert len({p.name for p in built["policies"]}) == len(built["policies"]) == 40
    manifest = yaml.safe_load((ROOT / "policies" / "PulumiPolicy.yaml").read_text())
    assert manifest["runtime"]["name"] == "python"


def test_policy_config_files_name_only_known_rules() -> None:
    names = {p.name for p in POLICIES}
    for path in (ROOT / "policies" / "config").glob("*.json"):
        assert set(json.loads(path.read_text())) <= names, path.name
    assert {p.stem for p in (ROOT / "policies" / "config").glob("*.json")} >= set(STACKS)


def test_connection_budget_rule_counts_the_job_runner_replica_like_the_config_model() -> None:
    from mlflow_platform.config import from_config_values

    dev_server = yaml.safe_load((ROOT / "stacks/Pulumi.dev.yaml").read_text())["config"]["mlflow-platform:server"]
    overrides = {
        "mlflow-platform:server": {**dev_server, "jobExecution": True},
        "mlflow-platform:database": {
            "instanceClass": "db.t4g.small",
            "poolSize": 2,
            "maxOverflow": 2,
            "multiAz": False,
            "deletionProtection": False,
            "finalSnapshot": False,
        },
    }
    capture = plan.run(ROOT / "stacks/Pulumi.dev.yaml", project_root=ROOT, overrides=overrides)
    values = {
        k: v
        for k, v in yaml.safe_load((ROOT / "stacks/Pulumi.dev.yaml").read_text())["config"].items()
        if k.startswith("mlflow-platform:")
    }
    config = from_config_values({**values, **overrides}, source="test")
    assert config.connection_budget == (2 * 3 + 3 + 2) * 4 * 4  # both deployments plus the job processes
    assert violations(capture, "dev", "mlflow-connection-budget") == []
    tight = policy_check.evaluate(
        capture,
        [p for p in POLICIES if p.name == "mlflow-connection-budget"],
        {"mlflow-connection-budget": {"reservedConnections": 202 - config.connection_budget + 1}},
    )
    assert tight, "one connection less than the model's budget must fail the rule"


def test_a_prod_stack_with_teams_passes_closed_and_fails_with_read_as_the_default() -> None:
    from .test_infra_program import run_with, stack_section

    teams = [{"name": "search", "members": ["ana"]}, {"name": "ranking", "members": ["ben"], "readers": ["search"]}]
    closed = run_with("prod", teams=teams)
    ini = closed.one("kubernetes:core/v1:ConfigMap", "tracking-auth").inputs["data"]["basic_auth.ini"]
    assert "default_permission = NO_PERMISSIONS" in ini
    assert violations(closed, "prod", "mlflow-teams-closed-by-default") == []
    for permission in ("READ", "EDIT"):
        opened = run_with(
            "prod", teams=teams, server={**stack_section("prod", "server"), "defaultPermission": permission}
        )
        found = violations(opened, "prod", "mlflow-teams-closed-by-default")
        assert found and permission in found[0].message
    dev = run_with("dev", teams=teams, server={**stack_section("dev", "server"), "defaultPermission": "READ"})
    assert violations(dev, "dev", "mlflow-teams-closed-by-default") == []  # production only


def test_the_sso_rule_also_catches_a_browser_path_rule_without_login_and_an_unpinned_signer() -> None:
    rule = "alb-sso-login-on-browser-paths"
    widened = changed(
        "staging",
        "aws:lb/listenerRule:ListenerRule",
        lambda r: r.inputs["conditions"][0]["pathPattern"]["values"].append("/ajax-api/*"),
        "lb-machine-paths",
    )
    assert [m for v in violations(widened, "staging", rule) for m in ["/ajax-api/*"] if m in v.message] == [
        "/ajax-api/*"
    ]

    def unpin(config_map) -> None:
        settings = json.loads(config_map.inputs["data"]["sso.json"])
        config_map.inputs["data"]["sso.json"] = json.dumps({**settings, "signer": ""})

    unpinned = changed("staging", "kubernetes:core/v1:ConfigMap", unpin, "tracking-auth")
    assert any("signer" in v.message for v in violations(unpinned, "staging", rule))
    assert violations(captured("dev"), "dev", rule) == []  # no sso: nothing to check


def test_the_dashboard_and_the_artifact_capacity_alarms_stay_in_every_plan() -> None:
    """monitoring-dashboard-and-capacity: removing either capacity alarm, the dashboard, or one
    alarm's graph from the dashboard is a mandatory violation."""
    rule = "monitoring-dashboard-and-capacity"
    for stack in STACKS:
        assert violations(captured(stack), stack, rule) == [], stack
    for type_, name in (
        ("aws:cloudwatch/metricAlarm:MetricAlarm", "monitoring-artifact-store-size"),
        ("aws:cloudwatch/metricAlarm:MetricAlarm", "monitoring-artifact-store-objects"),
        ("aws:cloudwatch/dashboard:Dashboard", None),
    ):
        assert violations(changed("prod", type_, lambda r: False, name), "prod", rule), name

    def undraw(dashboard) -> None:
        body = json.loads(dashboard.inputs["dashboardBody"])
        body["widgets"] = [w for w in body["widgets"] if "db-cpu" not in json.dumps(w)]
        dashboard.inputs["dashboardBody"] = json.dumps(body)

    found = violations(changed("prod", "aws:cloudwatch/dashboard:Dashboard", undraw), "prod", rule)
    assert found and "mlflow-prod-db-cpu" in found[0].message
