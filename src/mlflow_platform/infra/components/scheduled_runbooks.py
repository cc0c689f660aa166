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
from .pods import CONTAINER_SECURITY, HOME, POD_SECURITY, SCRATCH_MOUNTS, SCRATCH_VOLUMES, labels, metadata, secret_env
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
        ns = config.namespace
        pod_labels = labels("mlflow-runbooks", config.environment)
        child = pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[server.deployment])

        password = random.RandomPassword(
            f"{name}-ops-password", length=32, special=False, opts=pulumi.ResourceOptions(parent=self)
        )
        k8s.core.v1.Secret(
            f"{name}-ops-secret",
            metadata=metadata(OPS_SECRET, ns, pod_labels),
            type="Opaque",
            string_data={"username": OPS_USER, "password": pulumi.Output.secret(password.result)},
            opts=child,
        )
        base_env = [
            {"name": "MLFLOW_TRACKING_URI", "value": server.in_cluster_url},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "HOME", "value": HOME},
        ]
        as_ops = [
            secret_env("MLFLOW_TRACKING_USERNAME", OPS_SECRET, "username"),
            secret_env("MLFLOW_TRACKING_PASSWORD", OPS_SECRET, "password"),
        ]

        def pod(command: list, env: list) -> dict:
            return {
                "restartPolicy": "Never",
                "serviceAccountName": APP,
                "automountServiceAccountToken": False,
                "securityContext": POD_SECURITY,
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
                        "securityContext": CONTAINER_SECURITY,
                        "volumeMounts": SCRATCH_MOUNTS,
                    }
                ],
                "volumes": SCRATCH_VOLUMES,
            }

        # The ops user, created (or its password re-set) by the admin once the server answers.
        k8s.batch.v1.Job(
            f"{name}-ops-user",
            metadata=metadata("mlflow-ensure-ops-user", ns, pod_labels),
            spec={
                "backoffLimit": 6,
                "activeDeadlineSeconds": 900,
                "template": {
                    "metadata": {"labels": pod_labels},
                    "spec": pod(
                        ["mlflow-platform", "ensure-user", "--username", OPS_USER, "--admin"],
                        [
                            {"name": "MLFLOW_TRACKING_USERNAME", "value": config.server.admin_username},
                            secret_env("MLFLOW_TRACKING_PASSWORD", SERVER_SECRET, ADMIN_PASSWORD.key),
                            secret_env("MLFLOW_PLATFORM_USER_PASSWORD", OPS_SECRET, "password"),
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
                    secret_env("PGPASSWORD", SERVER_SECRET, DB_PASSWORD.key),
                ],
            ),
        }
        for job_name, (schedule, command, extra_env) in jobs.items():
            k8s.batch.v1.CronJob(
                f"{name}-{job_name}",
                metadata=metadata(f"mlflow-{job_name}", ns, pod_labels),
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
                                "metadata": {"labels": {**pod_labels, "app.kubernetes.io/component": job_name}},
                                "spec": pod(command, as_ops + extra_env),
                            },
                        }
                    },
                },
                opts=child,
            )
        self.register_outputs({})
