"""What every pod of the platform shares: labels, security contexts, scratch volumes and env.

The server, its migration Job and the runbook CronJobs all run the same image under the same
restricted pod-security profile (non-root, read-only root filesystem, no capabilities, seccomp
RuntimeDefault); writable paths are emptyDir scratch volumes.
"""

from __future__ import annotations

from ...server_spec import EnvVar

#: The runbook CronJobs (named ``mlflow-<name>``): writers a schema upgrade suspends.
RUNBOOK_CRONJOBS = ("reap-stuck-runs", "cleanup-runs", "gc")

UID = 10001
HOME = "/home/mlflow"

POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": UID,
    "runAsGroup": UID,
    "fsGroup": UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}
SCRATCH_VOLUMES = [{"name": "tmp", "emptyDir": {}}, {"name": "home", "emptyDir": {}}]
SCRATCH_MOUNTS = [{"name": "tmp", "mountPath": "/tmp"}, {"name": "home", "mountPath": HOME}]


def labels(app: str, environment: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": app,
        "app.kubernetes.io/part-of": "mlflow-platform",
        "app.kubernetes.io/instance": environment,
    }


#: On a Job: replace it on the next `up` if it failed in an earlier one, instead of awaiting it forever
#: (pulumi-kubernetes batch/v1 Job docs, "pulumi.com/replaceUnready").
REPLACE_UNREADY = {"pulumi.com/replaceUnready": "true"}


def metadata(name: str, namespace: str, pod_labels: dict[str, str], **extra) -> dict:
    return {"name": name, "namespace": namespace, "labels": pod_labels, **extra}


def k8s_env(env: tuple[EnvVar, ...]) -> list[dict]:
    """Plain values inline; secrets only as secretKeyRef (never their values)."""
    return [
        {"name": e.name, "value": e.value}
        if e.secret is None
        else {"name": e.name, "valueFrom": {"secretKeyRef": {"name": e.secret.secret, "key": e.secret.key}}}
        for e in env
    ]


def secret_env(name: str, secret: str, key: str) -> dict:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
