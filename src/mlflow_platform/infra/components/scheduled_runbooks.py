"""The guide's weekly checklist, scheduled: CronJobs that run the project's own image.

An ops user (an MLflow admin, its password in a Secret) is created by a Job once the server is
up; reap-stuck-runs runs hourly, cleanup-runs (a dry run unless the stack enables it) and gc
weekly. They are hardened like the Deployment, never overlap, and keep a short history.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from ...config import StackConfig
from ...server_spec import ADMIN_PASSWORD, DB_PASSWORD, SERVER_SECRET, database_url
from .pods import (
    CONTAINER_SECURITY,
    HOME,
    POD_SECURITY,
    REPLACE_UNREADY,
    RUNBOOK_CRONJOBS,
    SCRATCH_MOUNTS,
    SCRATCH_VOLUMES,
    labels,
    metadata,
    secret_env,
)
from .tracking_server import APP, MAINTENANCE_ACCOUNT, OPS_SECRET, RUNBOOKS, TrackingServer, endpoints_for

OPS_USER = "mlflow-ops"


class ScheduledRunbooks(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        config: StackConfig,
        *,
        server: TrackingServer,
        image: pulumi.Input[str],
        db_host: pulumi.Input[str],
        bucket: pulumi.Input[str],
        provider: k8s.Provider,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("mlflow-platform:k8s:ScheduledRunbooks", name, None, opts)
        self._name, self._ns, self._image = name, config.namespace, image
        self._labels = labels(RUNBOOKS, config.environment)
        self._base_env = [
            {"name": "MLFLOW_TRACKING_URI", "value": server.in_cluster_url},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "HOME", "value": HOME},
        ]
        # After the rollout and the release step: a coordinated upgrade leaves the server at zero
        # replicas until the release Job scales it back.
        self._child = pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[server.rollout_done])
        self._ops_user(config, server, provider)
        self._network_policy(config)
        if config.runbooks.enabled:
            backend_uri = pulumi.Output.all(db_host, bucket).apply(
                lambda a: database_url(config, endpoints_for(config, a[0], a[1]), config.database.tracking_database)
            )
            for job_name, (schedule, command, extra_env) in _schedules(config, backend_uri).items():
                self._cronjob(job_name, schedule, command, extra_env)
        self.register_outputs({})

    def _network_policy(self, config: StackConfig) -> None:
        """Runbook pods talk to DNS, the server's pods and (gc only) PostgreSQL; nothing talks to them."""
        server_pods = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": APP}}}
        dns = {
            "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
        }
        k8s.networking.v1.NetworkPolicy(
            f"{self._name}-netpol",
            metadata=metadata(RUNBOOKS, self._ns, self._labels),
            spec={
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": RUNBOOKS}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [],
                "egress": [
                    dns,
                    {"to": [server_pods], "ports": [{"port": config.server.port, "protocol": "TCP"}]},
                    {"ports": [{"port": 5432, "protocol": "TCP"}]},
                ],
            },
            opts=self._child,
        )

    def _pod(self, command: list, env: list) -> dict:
        container = {
            "name": "runbook",
            "image": self._image,
            "command": command,
            "env": self._base_env + env,
            "resources": {"requests": {"cpu": "100m", "memory": "384Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
            "securityContext": CONTAINER_SECURITY,
            "volumeMounts": SCRATCH_MOUNTS,
        }
        return {
            "restartPolicy": "Never",
            "serviceAccountName": MAINTENANCE_ACCOUNT,
            "automountServiceAccountToken": False,
            "securityContext": POD_SECURITY,
            "containers": [container],
            "volumes": SCRATCH_VOLUMES,
        }

    def _ops_user(self, config: StackConfig, server: TrackingServer, provider: k8s.Provider) -> None:
        """The ops user's Secret, and a Job that creates the user (or re-sets its password) as the
        admin once the server answers."""
        password = random.RandomPassword(
            f"{self._name}-ops-password", length=32, special=False, opts=pulumi.ResourceOptions(parent=self)
        )
        k8s.core.v1.Secret(
            f"{self._name}-ops-secret",
            metadata=metadata(OPS_SECRET, self._ns, self._labels),
            type="Opaque",
            string_data={"username": OPS_USER, "password": pulumi.Output.secret(password.result)},
            opts=self._child,
        )
        as_admin = [
            {"name": "MLFLOW_TRACKING_USERNAME", "value": config.server.admin_username},
            secret_env("MLFLOW_TRACKING_PASSWORD", SERVER_SECRET, ADMIN_PASSWORD.key),
            secret_env("MLFLOW_PLATFORM_USER_PASSWORD", OPS_SECRET, "password"),
        ]
        command = ["mlflow-platform", "ensure-user", "--username", OPS_USER, "--admin"]
        k8s.batch.v1.Job(
            f"{self._name}-ops-user",
            metadata=metadata("mlflow-ensure-ops-user", self._ns, self._labels, annotations=REPLACE_UNREADY),
            spec={
                "backoffLimit": 6,
                "activeDeadlineSeconds": 900,
                "template": {"metadata": {"labels": self._labels}, "spec": self._pod(command, as_admin)},
            },
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=provider,
                depends_on=[server.rollout_done],
                # Past its 900 s deadline (pulumi-kubernetes gives up at 10 min by default): a Job
                # still running is never taken for failed and replaced mid-run (replaceUnready).
                custom_timeouts=pulumi.CustomTimeouts(create="20m", update="20m"),
                replace_on_changes=["spec"],
                delete_before_replace=True,
            ),
        )

    def _cronjob(self, job_name: str, schedule: str, command: list, extra_env: list) -> None:
        as_ops = [
            secret_env("MLFLOW_TRACKING_USERNAME", OPS_SECRET, "username"),
            secret_env("MLFLOW_TRACKING_PASSWORD", OPS_SECRET, "password"),
        ]
        template = {
            "metadata": {"labels": {**self._labels, "app.kubernetes.io/component": job_name}},
            "spec": self._pod(command, as_ops + extra_env),
        }
        k8s.batch.v1.CronJob(
            f"{self._name}-{job_name}",
            metadata=metadata(f"mlflow-{job_name}", self._ns, self._labels),
            spec={
                "schedule": schedule,
                "timeZone": "Etc/UTC",
                "concurrencyPolicy": "Forbid",
                "startingDeadlineSeconds": 600,
                "successfulJobsHistoryLimit": 3,
                "failedJobsHistoryLimit": 3,
                "jobTemplate": {"spec": {"backoffLimit": 1, "activeDeadlineSeconds": 3 * 3600, "template": template}},
            },
            opts=self._child,
        )


def _schedules(config: StackConfig, backend_uri: pulumi.Output[str]) -> dict[str, tuple[str, list, list]]:
    """CronJob name -> (schedule, command, extra environment)."""
    r = config.runbooks
    cleanup_mode = "--execute" if r.cleanup_execute else "--dry-run"
    schedules = {
        "reap-stuck-runs": (
            r.reap_schedule,
            [
                "mlflow-platform",
                "reap-stuck-runs",
                "--older-than-hours",
                str(r.reap_older_than_hours),
                "--status",
                "FAILED",
            ],
            [],
        ),
        "cleanup-runs": (
            r.cleanup_schedule,
            ["mlflow-platform", "cleanup-runs", "--older-than-days", str(r.cleanup_older_than_days), cleanup_mode],
            [],
        ),
        "gc": (
            r.gc_schedule,
            ["mlflow-platform", "gc", "--older-than", r.gc_older_than],
            [
                {"name": "MLFLOW_BACKEND_STORE_URI", "value": backend_uri},
                secret_env("PGPASSWORD", SERVER_SECRET, DB_PASSWORD.key),
            ],
        ),
    }
    assert tuple(schedules) == RUNBOOK_CRONJOBS  # the migration Job suspends them by these names
    if config.teams:  # each team's workspace, not only `default` (the ops user is an admin)
        for _, command, _ in schedules.values():
            command.append("--all-workspaces")
    return schedules
