"""The stack's teams onto the running server after each rollout: a Job running `mlflow-platform
teams sync` (workspaces, roles, users, role assignments; idempotent), whose log is the deploy's
record of what changed. New users' passwords go to Secrets Manager under the stack's prefix."""

from __future__ import annotations

import hashlib
import json

import pulumi
import pulumi_kubernetes as k8s

from ...config import StackConfig
from ...server_spec import ADMIN_PASSWORD, SERVER_SECRET
from .iam import team_secrets_prefix
from .pods import (
    CONTAINER_SECURITY,
    HOME,
    POD_SECURITY,
    REPLACE_UNREADY,
    SCRATCH_MOUNTS,
    SCRATCH_VOLUMES,
    labels,
    metadata,
    secret_env,
)
from .tracking_server import APP, TrackingServer

TEAMS_ACCOUNT = "mlflow-teams"
TEAMS_DIR = "/etc/mlflow/teams"


def teams_document(config: StackConfig) -> str:
    """The `teams` section as `teams sync --teams-file` reads it (camelCase, as in the stack file)."""
    return json.dumps([t.model_dump(by_alias=True, exclude_none=True) for t in config.teams], indent=2) + "\n"


def _sync_command(config: StackConfig, server: TrackingServer) -> tuple[list[str], list[dict]]:
    """`teams sync` on the mounted teams file, as the admin, keeping passwords under the stack's prefix."""
    command = ["mlflow-platform", "teams", "sync", "--teams-file", f"{TEAMS_DIR}/teams.json"]
    command += ["--secrets-prefix", team_secrets_prefix(config.environment)]
    if config.sso:  # people's roles follow their IdP groups; the Job leaves them alone
        command += ["--keep-undeclared-users"]
    env = [
        {"name": "MLFLOW_TRACKING_URI", "value": server.in_cluster_url},
        {"name": "MLFLOW_TRACKING_USERNAME", "value": config.server.admin_username},
        secret_env("MLFLOW_TRACKING_PASSWORD", SERVER_SECRET, ADMIN_PASSWORD.key),
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "HOME", "value": HOME},
    ]
    return command, env


class TeamSync(pulumi.ComponentResource):
    job: k8s.batch.v1.Job

    def __init__(
        self,
        name: str,
        config: StackConfig,
        *,
        server: TrackingServer,
        image: pulumi.Input[str],
        role_arn: pulumi.Input[str],
        provider: k8s.Provider,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("mlflow-platform:k8s:TeamSync", name, None, opts)
        self._name, self._ns = name, config.namespace
        self._labels = labels(TEAMS_ACCOUNT, config.environment)
        child = pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[server.rollout_done])
        document = teams_document(config)
        teams = k8s.core.v1.ConfigMap(
            f"{name}-teams", metadata=self._meta(TEAMS_ACCOUNT), data={"teams.json": document}, opts=child
        )
        account = k8s.core.v1.ServiceAccount(
            f"{name}-sa",
            metadata=self._meta(TEAMS_ACCOUNT, annotations={"eks.amazonaws.com/role-arn": role_arn}),
            automount_service_account_token=False,
            opts=child,
        )
        self._network_policy(config, child)
        command, env = _sync_command(config, server)
        digest = hashlib.sha256(document.encode()).hexdigest()[:8]  # a new Job whenever the teams change
        self.job = k8s.batch.v1.Job(
            f"{name}-job",
            metadata=pulumi.Output.from_input(image).apply(
                lambda ref: self._meta(
                    f"mlflow-teams-sync-{hashlib.sha256((ref + digest).encode()).hexdigest()[:8]}",
                    annotations=REPLACE_UNREADY,
                )
            ),
            spec={
                "backoffLimit": 2,
                "activeDeadlineSeconds": 900,
                "template": {"metadata": {"labels": self._labels}, "spec": self._pod(image, command, env)},
            },
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=provider,
                depends_on=[teams, account, server.rollout_done],
                # Past its 900 s deadline (pulumi-kubernetes gives up at 10 min by default): a Job
                # still running is never taken for failed and replaced mid-run (replaceUnready).
                custom_timeouts=pulumi.CustomTimeouts(create="20m", update="20m"),
                delete_before_replace=True,
            ),
        )
        self.register_outputs({})

    def _meta(self, k8s_name: str, **extra) -> dict:
        return metadata(k8s_name, self._ns, self._labels, **extra)

    def _pod(self, image: pulumi.Input[str], command: list[str], env: list[dict]) -> dict:
        container = {
            "name": "teams",
            "image": image,
            "command": command,
            "env": env,
            "resources": {"requests": {"cpu": "100m", "memory": "384Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
            "securityContext": CONTAINER_SECURITY,
            "volumeMounts": [*SCRATCH_MOUNTS, {"name": "teams", "mountPath": TEAMS_DIR, "readOnly": True}],
        }
        return {
            "restartPolicy": "Never",
            "serviceAccountName": TEAMS_ACCOUNT,
            "automountServiceAccountToken": False,
            "securityContext": POD_SECURITY,
            "containers": [container],
            "volumes": [*SCRATCH_VOLUMES, {"name": "teams", "configMap": {"name": TEAMS_ACCOUNT}}],
        }

    def _network_policy(self, config: StackConfig, child: pulumi.ResourceOptions) -> None:
        """DNS, the server's pods, and HTTPS (Secrets Manager, STS for IRSA); nothing talks to it."""
        dns = {
            "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
        }
        server_pods = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": APP}}}
        k8s.networking.v1.NetworkPolicy(
            f"{self._name}-netpol",
            metadata=self._meta(TEAMS_ACCOUNT),
            spec={
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": TEAMS_ACCOUNT}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [],
                "egress": [
                    dns,
                    {"to": [server_pods], "ports": [{"port": config.server.port, "protocol": "TCP"}]},
                    {"ports": [{"port": 443, "protocol": "TCP"}]},
                ],
            },
            opts=child,
        )
