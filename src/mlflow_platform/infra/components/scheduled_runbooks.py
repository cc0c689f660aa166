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
from ...server_spec import DB_PASSWORD, SERVER_SECRET, database_url
from .tracking_server import APP, TrackingServer, endpoints_for

OPS_USER = "mlflow-ops"
OPS_SECRET = "mlflow-ops"


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
        r = config.runbooks
        ns = config.cluster.namespace if config.cluster else "mlflow"
        labels = {
            "app.kubernetes.io/name": "mlflow-runbooks",
            "app.kubernetes.io/part-of": "mlflow-platform",
            "app.kubernetes.io/instance": config.environment,
        }
        child = pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[server.deployment])

        password = random.RandomPassword(
            f"{name}-ops-password", length=32, special=False, opts=pulumi.ResourceOptions(parent=self)
        )
        k8s.core.v1.Secret(
            f"{name}-ops-secret",
            metadata={"name": OPS_SECRET, "namespace": ns, "labels": labels},
            type="Opaque",
            string_data={"username": OPS_USER, "password": pulumi.Output.secret(password.result)},
            opts=child,
        )
        base_env = [
            {"name": "MLFLOW_TRACKING_URI", "value": server.in_cluster_url},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "HOME", "value": "/home/mlflow"},
        ]
        as_ops = [
            {
                "name": "MLFLOW_TRACKING_USERNAME",
                "valueFrom": {"secretKeyRef": {"name": OPS_SECRET, "key": "username"}},
            },
            {
                "name": "MLFLOW_TRACKING_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": OPS_SECRET, "key": "password"}},
            },
        ]

        def pod(command: list, env: list) -> dict:
            return {
                "restartPolicy": "Never",
                "serviceAccountName": APP,
                "automountServiceAccountToken": False,
                "securityContext": server.pod_security,
                "containers": [
                    {
                        "name": "runbook",
                        "image": image,
                        "command": command,
                        "env": base_env + env,
                        "resources": {
                            "requests": {"cpu": "100m", "memory": "384Mi"},
                            "limits": {"cpu": "1", "memory": "1Gi"},
                        },
                        "securityContext": server.container_security,
                        "volumeMounts": [
                            {"name": "tmp", "mountPath": "/tmp"},
                            {"name": "home", "mountPath": "/home/mlflow"},
                        ],
                    }
                ],
                "volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "home", "emptyDir": {}}],
            }

        # The ops user, created (or its password re-set) by the admin once the server answers.
        k8s.batch.v1.Job(
            f"{name}-ops-user",
            metadata={"name": "mlflow-ensure-ops-user", "namespace": ns, "labels": labels},
            spec={
                "backoffLimit": 6,
                "activeDeadlineSeconds": 900,
                "template": {
                    "metadata": {"labels": labels},
                    "spec": pod(
                        ["mlflow-platform", "ensure-user", "--username", OPS_USER, "--admin"],
                        [
                            {"name": "MLFLOW_TRACKING_USERNAME", "value": config.server.admin_username},
                            {
                                "name": "MLFLOW_TRACKING_PASSWORD",
                                "valueFrom": {"secretKeyRef": {"name": SERVER_SECRET, "key": "admin-password"}},
                            },
                            {
                                "name": "MLFLOW_PLATFORM_USER_PASSWORD",
                                "valueFrom": {"secretKeyRef": {"name": OPS_SECRET, "key": "password"}},
                            },
                        ],
                    ),
                },
            },
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=provider,
                depends_on=[server.deployment],
                replace_on_changes=["spec"],
                delete_before_replace=True,
            ),
        )
        if not r.enabled:
            self.register_outputs({})
            return

        backend_uri = pulumi.Output.all(db_host, bucket).apply(
            lambda a: database_url(config, endpoints_for(config, a[0], a[1]), config.database.tracking_database)
        )
        jobs = {
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
                [
                    "mlflow-platform",
                    "cleanup-runs",
                    "--older-than-days",
                    str(r.cleanup_older_than_days),
                    "--execute" if r.cleanup_execute else "--dry-run",
                ],
                [],
            ),
            "gc": (
                r.gc_schedule,
                ["mlflow-platform", "gc", "--older-than", r.gc_older_than],
                [
                    {"name": "MLFLOW_BACKEND_STORE_URI", "value": backend_uri},
                    {
                        "name": "PGPASSWORD",
                        "valueFrom": {"secretKeyRef": {"name": SERVER_SECRET, "key": DB_PASSWORD.key}},
                    },
                ],
            ),
        }
        for job_name, (schedule, command, extra_env) in jobs.items():
            k8s.batch.v1.CronJob(
                f"{name}-{job_name}",
                metadata={"name": f"mlflow-{job_name}", "namespace": ns, "labels": labels},
                spec={
                    "schedule": schedule,
                    "timeZone": "Etc/UTC",
                    "concurrencyPolicy": "Forbid",
                    "startingDeadlineSeconds": 600,
                    "successfulJobsHistoryLimit": 3,
                    "failedJobsHistoryLimit": 3,
                    "jobTemplate": {
                        "spec": {
                            "backoffLimit": 1,
                            "activeDeadlineSeconds": 3 * 3600,
                            "template": {
                                "metadata": {"labels": {**labels, "app.kubernetes.io/component": job_name}},
                                "spec": pod(command, as_ops + extra_env),
                            },
                        }
                    },
                },
                opts=child,
            )
        self.register_outputs({})
