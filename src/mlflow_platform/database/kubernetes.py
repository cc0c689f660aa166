"""The writers in a cluster: the server and job Deployments and the runbook CronJobs.

Stopping scales each Deployment to zero through its scale subresource and suspends each CronJob,
recording what it changed in annotations on the objects themselves, then waits until none of
their pods is left. While the server has no pods the ALB answers 503, which MLflow's client
retries. An HPA whose target is at zero replicas stops acting until the target is scaled up again
(Kubernetes: "implicit maintenance-mode deactivation"), so it does not fight the stop.
Resuming (after the new version's rollout) restores the recorded replica counts and un-suspends.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from ..errors import UpgradeError

#: On a Deployment: its replica count before the upgrade stopped it.
REPLICAS = "mlflow-platform.io/replicas-before-upgrade"
#: On a CronJob: suspended by the upgrade (and so to be resumed by it).
SUSPENDED = "mlflow-platform.io/suspended-by-upgrade"
#: On the server Deployment: why the last upgrade failed; blocks resuming until cleared.
FAILED = "mlflow-platform.io/upgrade-failed"
VERSION_LABEL = "app.kubernetes.io/version"


def _clients():
    from kubernetes import client, config

    config.load_incluster_config()
    return client.AppsV1Api(), client.BatchV1Api(), client.CoreV1Api()


@dataclass
class KubernetesWriters:
    namespace: str
    deployments: tuple[str, ...]
    cronjobs: tuple[str, ...]
    #: Label selectors of every pod that writes: the Deployments' and the CronJobs' pods.
    pod_selectors: tuple[str, ...]
    apps: object = None
    batch: object = None
    core: object = None
    timeout: float = 900.0
    poll: float = 3.0

    def __post_init__(self) -> None:
        if self.apps is None:
            self.apps, self.batch, self.core = _clients()

    def _read(self, read, name: str):
        """The object, or None before its first rollout (a 404)."""
        from kubernetes.client.exceptions import ApiException

        try:
            return read(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _annotate(self, patch, name: str, annotations: dict) -> None:
        patch(name, self.namespace, {"metadata": {"annotations": annotations}})

    def stop(self, log) -> None:
        for name in self.cronjobs:
            cronjob = self._read(self.batch.read_namespaced_cron_job, name)
            if cronjob is not None and not cronjob.spec.suspend:
                body = {"metadata": {"annotations": {SUSPENDED: "true"}}, "spec": {"suspend": True}}
                self.batch.patch_namespaced_cron_job(name, self.namespace, body)
                log(f"suspend   cronjob/{name}")
        for name in self.deployments:
            scale = self._read(self.apps.read_namespaced_deployment_scale, name)
            if scale is not None and scale.spec.replicas:
                self._annotate(self.apps.patch_namespaced_deployment, name, {REPLICAS: str(scale.spec.replicas)})
                self.apps.patch_namespaced_deployment_scale(name, self.namespace, {"spec": {"replicas": 0}})
                log(f"scale     deployment/{name}: {scale.spec.replicas} -> 0")
        self._wait_for_no_writer_pods(log)

    def _wait_for_no_writer_pods(self, log) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            left = [
                pod.metadata.name
                for selector in self.pod_selectors
                for pod in self.core.list_namespaced_pod(self.namespace, label_selector=selector).items
                if pod.status.phase in ("Pending", "Running", "Unknown")
            ]
            if not left:
                log("writers   none left")
                return
            if time.monotonic() > deadline:
                raise UpgradeError(f"writers still running after {self.timeout:.0f} s: {', '.join(left)}")
            time.sleep(self.poll)

    def resume(self, log) -> None:
        """Restore what ``stop`` recorded; refuses while a failed upgrade is recorded."""
        failure = self.failure()
        if failure:
            raise UpgradeError(f"not resuming: an upgrade failed and was not cleared: {failure}")
        for name in self.deployments:
            replicas = self._annotation(name, REPLICAS)
            if replicas:
                self.apps.patch_namespaced_deployment_scale(name, self.namespace, {"spec": {"replicas": int(replicas)}})
                self._annotate(self.apps.patch_namespaced_deployment, name, {REPLICAS: None})
                log(f"scale     deployment/{name}: 0 -> {replicas}")
        for name in self.cronjobs:
            cronjob = self._read(self.batch.read_namespaced_cron_job, name)
            if cronjob is not None and (cronjob.metadata.annotations or {}).get(SUSPENDED):
                body = {"metadata": {"annotations": {SUSPENDED: None}}, "spec": {"suspend": False}}
                self.batch.patch_namespaced_cron_job(name, self.namespace, body)
                log(f"resume    cronjob/{name}")

    def _annotation(self, name: str, key: str) -> str | None:
        deployment = self._read(self.apps.read_namespaced_deployment, name)
        return None if deployment is None else (deployment.metadata.annotations or {}).get(key)

    def deployed_version(self) -> str | None:
        deployment = self._read(self.apps.read_namespaced_deployment, self.deployments[0])
        return None if deployment is None else (deployment.metadata.labels or {}).get(VERSION_LABEL)

    def mark_failed(self, reason: str) -> None:
        from kubernetes.client.exceptions import ApiException

        with contextlib.suppress(ApiException):  # no Deployment yet: the Job's failure is the record
            self._annotate(self.apps.patch_namespaced_deployment, self.deployments[0], {FAILED: reason[:2000]})

    def wait_until_available(self, log) -> None:
        """Until every Deployment has as many available pods as it wants (the rollout's end)."""
        deadline = time.monotonic() + self.timeout
        for name in self.deployments:
            while True:
                deployment = self._read(self.apps.read_namespaced_deployment, name)
                wanted = deployment.spec.replicas or 0 if deployment else 0
                available = (deployment.status.available_replicas or 0) if deployment else 0
                if available >= wanted:
                    log(f"available deployment/{name}: {available}/{wanted}")
                    break
                if time.monotonic() > deadline:
                    raise UpgradeError(
                        f"deployment/{name} has {available}/{wanted} available pods after {self.timeout:.0f} s"
                    )
                time.sleep(self.poll)

    def failure(self) -> str | None:
        return self._annotation(self.deployments[0], FAILED)

    def clear_failure(self, log) -> None:
        self._annotate(self.apps.patch_namespaced_deployment, self.deployments[0], {FAILED: None})
        log(f"cleared   the failed-upgrade mark on deployment/{self.deployments[0]}")
