"""Upgrade-aware deploys: the pieces `pulumi up` renders (under Pulumi's mocks, every stack), the
writer control the migration Job runs (against the kubernetes client's own API signatures) and
the RDS snapshot it takes (moto). The schema decision and the migration itself run against real
PostgreSQL in test_upgrade_drill.py."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from types import SimpleNamespace as NS
from unittest import mock

import pytest

from mlflow_platform.database.backup import snapshot_name
from mlflow_platform.database.upgrade import RdsSnapshot
from mlflow_platform.errors import UpgradeError
from mlflow_platform.infra.components.tracking_server import APP, PRESTOP_SECONDS

from .paths import STACKS, captured
from .test_infra_program import run_with, stack_section

JOB = "kubernetes:batch/v1:Job"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
CRONJOB = "kubernetes:batch/v1:CronJob"


def _command(job) -> list[str]:
    return job.inputs["spec"]["template"]["spec"]["containers"][0]["command"]


def _values(command: list[str], flag: str) -> list[str]:
    return [command[i + 1] for i, arg in enumerate(command) if arg == flag]


def _selects(selector: str, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics for the two forms rendered: `k=v` and `k in (a,b)`."""
    for term in re.split(r",(?![^()]*\))", selector):
        if " in " in term:
            key, values = term.split(" in ")
            if labels.get(key.strip()) not in {v.strip() for v in values.strip("() ").split(",")}:
                return False
        else:
            key, value = term.split("=")
            if labels.get(key) != value:
                return False
    return True


@pytest.mark.parametrize("stack", STACKS)
def test_no_new_pod_starts_before_the_migration_step_completes(stack: str) -> None:
    """Every Deployment waits for the migration Job, and pulumi-kubernetes waits for a Job to
    complete (its documented await rule, read from the installed package); a failed Job fails
    `pulumi up` before any Deployment changes. The release step waits for every Deployment, and
    everything that calls the server waits for the release step."""
    import pulumi_kubernetes

    doc = (Path(pulumi_kubernetes.__file__).parent / "batch" / "v1" / "Job.py").read_text()
    assert "type 'Complete'" in doc and "'Failed', with a" in doc and "after 10 minutes" in doc
    capture = captured(stack)
    migrate = capture.one(JOB, "tracking-migrate")
    release = capture.one(JOB, "tracking-release")
    deployments = capture.of_type(DEPLOYMENT)
    assert deployments and all(migrate.urn in d.dependencies for d in deployments)
    assert all(d.urn in release.dependencies for d in deployments)
    callers = [capture.one(JOB, "runbooks-ops-user"), *capture.of_type(CRONJOB)]
    assert all(release.urn in c.dependencies for c in callers)
    for job in (migrate, release):
        deadline = job.inputs["spec"]["activeDeadlineSeconds"]
        assert job.inputs["spec"]["backoffLimit"] == 0
        for key in ("create", "update"):  # the 10-minute default would abandon a long snapshot
            assert int(job.timeouts[key].removesuffix("m")) * 60 > deadline


def test_a_new_image_re_runs_the_migration_step() -> None:
    before = captured("prod").one(JOB, "tracking-migrate").inputs["metadata"]["name"]
    image = {"build": False, "reference": "registry.example.com/mlflow:3.17.3"}
    after = run_with("prod", image=image).one(JOB, "tracking-migrate").inputs["metadata"]["name"]
    assert before != after and before.startswith("mlflow-db-migrate-")


@pytest.mark.parametrize("stack", STACKS)
def test_the_migration_job_stops_exactly_the_writers_the_stack_runs(stack: str) -> None:
    capture = captured(stack)
    command = _command(capture.one(JOB, "tracking-migrate"))
    deployments = {d.inputs["metadata"]["name"]: d for d in capture.of_type(DEPLOYMENT)}
    cronjobs = {c.inputs["metadata"]["name"]: c for c in capture.of_type(CRONJOB)}
    assert set(_values(command, "--deployment")) == set(deployments)
    assert set(_values(command, "--cronjob")) == set(cronjobs)
    selectors = _values(command, "--writer-pods")
    writer_pods = [d.inputs["spec"]["template"]["metadata"]["labels"] for d in deployments.values()]
    writer_pods += [
        c.inputs["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"] for c in cronjobs.values()
    ]
    assert all(any(_selects(s, labels) for s in selectors) for labels in writer_pods)
    steps = [capture.one(JOB, n).inputs["spec"]["template"]["metadata"]["labels"] for n in ("tracking-migrate",)]
    assert not any(_selects(s, labels) for s in selectors for labels in steps)  # it never waits for itself
    assert _values(command, "--rds-instance") == [f"mlflow-{stack}"]
    release = _command(capture.one(JOB, "tracking-release"))
    assert release[:3] == ["mlflow-platform", "db", "resume"]
    assert set(_values(release, "--deployment")) == set(deployments)
    assert set(_values(release, "--cronjob")) == set(cronjobs)
    # What the next upgrade reads to name its snapshot "from" version.
    assert {d.inputs["metadata"]["labels"]["app.kubernetes.io/version"] for d in deployments.values()} == {"3.17.2"}


def test_with_job_execution_both_deployments_are_stopped() -> None:
    with_jobs = run_with(
        "dev",
        server={**stack_section("dev", "server"), "jobExecution": True},
        database={**stack_section("dev", "database"), "poolSize": 2, "maxOverflow": 2},
    )
    command = _command(with_jobs.one(JOB, "tracking-migrate"))
    assert _values(command, "--deployment") == [APP, f"{APP}-jobs"]


@pytest.mark.parametrize("stack", STACKS)
def test_the_migration_account_may_scale_the_writers_and_snapshot_the_instance_only(stack: str) -> None:
    capture = captured(stack)
    command = _command(capture.one(JOB, "tracking-migrate"))
    role = capture.one("kubernetes:rbac.authorization.k8s.io/v1:Role", "tracking-migration-role").inputs
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): r for r in role["rules"]}
    scale = rules[(("apps",), ("deployments", "deployments/scale"))]
    assert scale["resourceNames"] == _values(command, "--deployment") and scale["verbs"] == ["get", "patch"]
    assert rules[(("",), ("pods",))]["verbs"] == ["list"]
    assert rules[(("batch",), ("cronjobs",))]["resourceNames"] == _values(command, "--cronjob")
    assert len(rules) == 3  # nothing else: no create, no delete, no secrets
    binding = capture.one("kubernetes:rbac.authorization.k8s.io/v1:RoleBinding", "tracking-migration-binding").inputs
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mlflow-migration", "namespace": "mlflow"}]
    for name in ("tracking-migrate", "tracking-release"):
        pod = capture.one(JOB, name).inputs["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "mlflow-migration" and pod["automountServiceAccountToken"] is True
    iam = capture.one("aws:iam/role:Role", "migration-role-role")
    account = capture.one("kubernetes:core/v1:ServiceAccount", "tracking-migration-sa").inputs
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == iam.outputs["arn"]
    trust = json.loads(iam.inputs["assumeRolePolicy"])["Statement"][0]["Condition"]["StringEquals"]
    assert "system:serviceaccount:mlflow:mlflow-migration" in trust.values()
    policy = json.loads(capture.one("aws:iam/rolePolicy:RolePolicy", "migration-role-policy").inputs["policy"])
    actions = {a for s in policy["Statement"] for a in s["Action"]}
    assert actions == {"rds:CreateDBSnapshot", "rds:AddTagsToResource", "rds:DescribeDBSnapshots"}
    resources = {r for s in policy["Statement"] for r in s["Resource"]}
    instance = capture.one("aws:rds/instance:Instance", "database-instance")
    snapshots = next(r for r in resources if ":snapshot:" in r)
    assert resources == {instance.outputs["arn"], snapshots}
    name = snapshot_name(f"mlflow-{stack}", "3.10.1", "3.17.2")
    pattern = snapshots.rsplit(":", 1)[1]
    assert pattern == f"mlflow-{stack}-upgrade-*"  # only this instance's upgrade snapshots
    assert fnmatch.fnmatch(name, pattern) and not fnmatch.fnmatch(snapshot_name("other", "3.10.1", "3.17.2"), pattern)
    boundary = json.loads(capture.one("aws:iam/policy:Policy", "boundary-policy").inputs["policy"])
    allowed = {a for s in boundary["Statement"] for a in s["Action"]}
    assert actions <= allowed  # the boundary would otherwise cancel the grant


@pytest.mark.parametrize("stack", STACKS)
def test_a_rolling_update_without_schema_change_keeps_serving(stack: str) -> None:
    """maxUnavailable 0 (a new pod is ready before an old one goes); the preStop sleep keeps an
    old pod serving while the ALB deregisters it, then gunicorn drains; the kubelet's grace period
    covers both, and the target group's deregistration delay lets in-flight requests finish
    (https://docs.aws.amazon.com/elasticloadbalancing/latest/application/load-balancer-target-groups.html#deregistration-delay)."""
    capture = captured(stack)
    graceful = stack_section(stack, "server").get("gracefulTimeoutSeconds", 30)
    server = capture.one(DEPLOYMENT, "tracking-deployment").inputs["spec"]
    assert server["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    pod = server["template"]["spec"]
    assert pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"] == PRESTOP_SECONDS
    assert pod["terminationGracePeriodSeconds"] > PRESTOP_SECONDS + graceful
    target_group = capture.one("aws:lb/targetGroup:TargetGroup", "lb-tg").inputs
    assert target_group["deregistrationDelay"] >= PRESTOP_SECONDS + graceful


def _api_error(status: int):
    from kubernetes.client.exceptions import ApiException

    return ApiException(status=status, reason="Not Found")


class FakeCluster:
    """The API objects the writer control reads and patches, behind autospecs of the real
    kubernetes client classes: a wrong method name or argument fails the test."""

    def __init__(self, replicas: dict[str, int | None], cronjobs: list[str]):
        from kubernetes import client

        self.replicas = dict(replicas)
        self.annotations: dict[str, dict] = {n: {} for n in [*replicas, *cronjobs]}
        self.suspended = dict.fromkeys(cronjobs, False)
        self.pods: list[str] = [f"{n}-pod" for n, r in replicas.items() if r]
        self.apps = mock.create_autospec(client.AppsV1Api, instance=True)
        self.batch = mock.create_autospec(client.BatchV1Api, instance=True)
        self.core = mock.create_autospec(client.CoreV1Api, instance=True)
        self.apps.read_namespaced_deployment_scale.side_effect = lambda n, ns: self._scale(n)
        self.apps.read_namespaced_deployment.side_effect = lambda n, ns: self._deployment(n)
        self.apps.patch_namespaced_deployment.side_effect = lambda n, ns, body: self._annotate(n, body)
        self.apps.patch_namespaced_deployment_scale.side_effect = lambda n, ns, body: self._set_replicas(n, body)
        self.batch.read_namespaced_cron_job.side_effect = lambda n, ns: self._cronjob(n)
        self.batch.patch_namespaced_cron_job.side_effect = lambda n, ns, body: self._patch_cronjob(n, body)
        self.core.list_namespaced_pod.side_effect = lambda ns, label_selector: NS(items=self._pods())

    def _exists(self, name: str) -> None:
        if self.replicas.get(name, 0) is None:
            raise _api_error(404)

    def _scale(self, name):
        self._exists(name)
        return NS(spec=NS(replicas=self.replicas[name]))

    def _deployment(self, name):
        self._exists(name)
        meta = NS(annotations=dict(self.annotations[name]), labels={"app.kubernetes.io/version": "3.10.1"})
        status = NS(available_replicas=self.replicas[name])
        return NS(metadata=meta, spec=NS(replicas=self.replicas[name]), status=status)

    def _annotate(self, name, body):
        for key, value in body["metadata"]["annotations"].items():
            if value is None:
                self.annotations[name].pop(key, None)
            else:
                self.annotations[name][key] = value

    def _set_replicas(self, name, body):
        self.replicas[name] = body["spec"]["replicas"]
        if not self.replicas[name]:
            self.pods = [p for p in self.pods if not p.startswith(name)]

    def _cronjob(self, name):
        return NS(metadata=NS(annotations=dict(self.annotations[name])), spec=NS(suspend=self.suspended[name]))

    def _patch_cronjob(self, name, body):
        self._annotate(name, body)
        self.suspended[name] = body["spec"]["suspend"]

    def _pods(self):
        return [NS(metadata=NS(name=p), status=NS(phase="Running")) for p in self.pods]

    def writers(self):
        from mlflow_platform.database.kubernetes import KubernetesWriters

        return KubernetesWriters(
            "mlflow",
            tuple(self.replicas),
            tuple(self.suspended),
            ("app.kubernetes.io/name=mlflow-server",),
            apps=self.apps,
            batch=self.batch,
            core=self.core,
            timeout=5,
            poll=0.01,
        )


def test_stopping_records_what_it_changed_and_resuming_restores_exactly_that() -> None:
    cluster = FakeCluster({"mlflow-server": 3, "mlflow-server-jobs": 1}, ["mlflow-gc", "mlflow-reap-stuck-runs"])
    cluster.suspended["mlflow-reap-stuck-runs"] = True  # an operator paused it: the upgrade must not resume it
    writers = cluster.writers()
    lines: list[str] = []
    writers.stop(lines.append)
    assert cluster.replicas == {"mlflow-server": 0, "mlflow-server-jobs": 0} and cluster.pods == []
    assert cluster.suspended == {"mlflow-gc": True, "mlflow-reap-stuck-runs": True}
    assert writers.deployed_version() == "3.10.1"
    writers.resume(lines.append)
    assert cluster.replicas == {"mlflow-server": 3, "mlflow-server-jobs": 1}
    assert cluster.suspended == {"mlflow-gc": False, "mlflow-reap-stuck-runs": True}
    assert all(not a for a in cluster.annotations.values())
    writers.resume(lines.append)  # a second release step changes nothing
    assert cluster.replicas == {"mlflow-server": 3, "mlflow-server-jobs": 1}


def test_a_recorded_failure_blocks_resuming_until_cleared() -> None:
    cluster = FakeCluster({"mlflow-server": 2}, [])
    writers = cluster.writers()
    writers.stop(lambda _: None)
    writers.mark_failed("migration failed: boom. Writers stay stopped; restore with: mlflow-platform db restore …")
    with pytest.raises(UpgradeError, match="not resuming.*migration failed"):
        writers.resume(lambda _: None)
    assert cluster.replicas == {"mlflow-server": 0}
    writers.clear_failure(lambda _: None)
    writers.resume(lambda _: None)
    assert cluster.replicas == {"mlflow-server": 2}


def test_the_first_deploy_has_no_writers_to_stop() -> None:
    cluster = FakeCluster({"mlflow-server": None}, [])
    cluster.suspended = {}
    writers = cluster.writers()
    assert writers.failure() is None and writers.deployed_version() is None
    writers.stop(lambda _: None)
    writers.resume(lambda _: None)


def test_writers_that_do_not_stop_in_time_fail_the_step() -> None:
    cluster = FakeCluster({"mlflow-server": 1}, [])
    cluster.pods.append("mlflow-runbooks-gc-pod")  # a gc run still going
    with pytest.raises(UpgradeError, match="still running.*gc-pod"):
        cluster.writers().stop(lambda _: None)


@pytest.mark.parametrize(
    ("instance", "versions"),
    [("mlflow-prod", ("3.10.1", "3.17.2")), ("mlflow-dev", ("unknown", "3.17.2")), ("a" * 250, ("2.18.0", "3.17.2"))],
)
def test_snapshot_names_meet_the_rds_identifier_rules(instance: str, versions: tuple[str, str]) -> None:
    """CreateDBSnapshot: 1-255 letters, digits or hyphens, a letter first, no '--', no trailing '-'."""
    name = snapshot_name(instance, *versions)
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{0,254}", name) and "--" not in name and not name.endswith("-")
    if len(instance) < 40:
        assert name.startswith(f"{instance}-upgrade-{versions[0].replace('.', '-')}-to-3-17-2-")


def test_the_rds_backup_snapshots_the_instance_and_names_the_restore(moto_credentials) -> None:
    import boto3
    from moto import mock_aws

    with mock_aws():
        rds = boto3.client("rds")
        rds.create_db_instance(
            DBInstanceIdentifier="mlflow-prod",
            Engine="postgres",
            DBInstanceClass="db.t4g.medium",
            MasterUsername="mlflow",
            MasterUserPassword="x" * 20,
            AllocatedStorage=20,
        )
        backup = RdsSnapshot("mlflow-prod")
        [snapshot] = backup.take("3.10.1", "3.17.2", lambda _: None)
        found = rds.describe_db_snapshots(DBSnapshotIdentifier=snapshot)["DBSnapshots"][0]
        assert found["Status"] == "available" and found["DBInstanceIdentifier"] == "mlflow-prod"
        assert snapshot.startswith("mlflow-prod-upgrade-3-10-1-to-3-17-2-")
        assert backup.restore_command([snapshot]) == (
            f"mlflow-platform db restore --snapshot {snapshot} --rds-instance mlflow-prod"
        )
