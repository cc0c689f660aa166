"""The tracking server on Kubernetes, running exactly what `render_server` renders.

Namespace, IRSA service account, Secrets, the auth ini ConfigMap, a migration Job that must
finish before the Deployment rolls, the Deployment (non-root, read-only root FS, probes on
/health, spread over zones, maxUnavailable 0), PDB, HPA, Service, NetworkPolicy, and the
TargetGroupBinding that registers pod IPs with the ALB target group.
"""

from __future__ import annotations

import hashlib

import pulumi
import pulumi_kubernetes as k8s

from ...config import StackConfig
from ...server_spec import (
    ADMIN_PASSWORD,
    DB_PASSWORD,
    FLASK_SECRET_KEY,
    SERVER_SECRET,
    Endpoints,
    EnvVar,
    ServerSpec,
    render_migration,
    render_server,
)

AUTH_DIR = "/etc/mlflow/auth"
APP = "mlflow-server"
UID = 10001


def in_cluster_hosts(namespace: str) -> tuple[str, ...]:
    """How in-cluster clients (the runbook CronJobs) address the Service: allowed Host headers."""
    return (f"{APP}.{namespace}.svc.cluster.local", f"{APP}.{namespace}.svc", f"{APP}.{namespace}")


def endpoints_for(config: StackConfig, db_host: str, bucket: str) -> Endpoints:
    namespace = config.cluster.namespace if config.cluster else "mlflow"
    return Endpoints(
        db_host=db_host,
        bucket=bucket,
        auth_config_path=f"{AUTH_DIR}/basic_auth.ini",
        extra_allowed_hosts=in_cluster_hosts(namespace),
    )


def k8s_env(env: tuple[EnvVar, ...]) -> list[dict]:
    """Plain values inline; secrets only as secretKeyRef (never their values)."""
    return [
        {"name": e.name, "value": e.value}
        if e.secret is None
        else {"name": e.name, "valueFrom": {"secretKeyRef": {"name": e.secret.secret, "key": e.secret.key}}}
        for e in env
    ]


class TrackingServer(pulumi.ComponentResource):
    namespace: pulumi.Output[str]
    service_name: pulumi.Output[str]
    deployment: k8s.apps.v1.Deployment
    in_cluster_url: str
    pod_security: dict
    container_security: dict

    def __init__(
        self,
        name: str,
        config: StackConfig,
        *,
        image: pulumi.Input[str],
        db_host: pulumi.Input[str],
        bucket: pulumi.Input[str],
        role_arn: pulumi.Input[str],
        db_password: pulumi.Input[str],
        flask_secret_key: pulumi.Input[str],
        admin_password: pulumi.Input[str],
        target_group_arn: pulumi.Input[str],
        alb_security_group_id: pulumi.Input[str],
        vpc_cidr: pulumi.Input[str],
        provider: k8s.Provider,
        depends_on: list[pulumi.Resource] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("mlflow-platform:k8s:TrackingServer", name, None, opts)
        s = config.server
        ns_name = config.cluster.namespace if config.cluster else "mlflow"
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        labels = {
            "app.kubernetes.io/name": APP,
            "app.kubernetes.io/part-of": "mlflow-platform",
            "app.kubernetes.io/instance": config.environment,
        }

        def render(primary: bool) -> pulumi.Output[ServerSpec]:
            return pulumi.Output.all(db_host, bucket).apply(
                lambda a: render_server(config, endpoints_for(config, a[0], a[1]), primary=primary)
            )

        spec = render(primary=False)
        migration = pulumi.Output.all(db_host, bucket).apply(
            lambda a: render_migration(config, Endpoints(db_host=a[0], bucket=a[1]))
        )

        namespace = k8s.core.v1.Namespace(
            f"{name}-ns",
            metadata={
                "name": ns_name,
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/warn": "restricted",
                },
            },
            opts=child,
        )
        ns_opts = pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[namespace])
        meta = lambda n, **extra: {"name": n, "namespace": ns_name, "labels": labels, **extra}  # noqa: E731

        account = k8s.core.v1.ServiceAccount(
            f"{name}-sa",
            metadata=meta(APP, annotations={"eks.amazonaws.com/role-arn": role_arn}),
            automount_service_account_token=False,
            opts=ns_opts,
        )
        secret = k8s.core.v1.Secret(
            f"{name}-secret",
            metadata=meta(SERVER_SECRET),
            type="Opaque",
            string_data={
                DB_PASSWORD.key: pulumi.Output.secret(db_password),
                FLASK_SECRET_KEY.key: pulumi.Output.secret(flask_secret_key),
                ADMIN_PASSWORD.key: pulumi.Output.secret(admin_password),
            },
            opts=ns_opts,
        )
        auth_ini = spec.apply(lambda sp: sp.auth_ini or "")
        config_map = k8s.core.v1.ConfigMap(
            f"{name}-auth", metadata=meta("mlflow-auth"), data={"basic_auth.ini": auth_ini}, opts=ns_opts
        )

        pod_security = {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        container_security = {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        }
        scratch = [{"name": "tmp", "emptyDir": {}}, {"name": "home", "emptyDir": {}}]
        scratch_mounts = [{"name": "tmp", "mountPath": "/tmp"}, {"name": "home", "mountPath": "/home/mlflow"}]

        # The Job's name carries a hash of what it runs, so each new image or schema step re-runs it;
        # pulumi-kubernetes waits for the Job to complete before the Deployment below changes.
        job_hash = pulumi.Output.all(image, migration.apply(lambda m: list(m.argv))).apply(
            lambda a: hashlib.sha256(repr(a).encode()).hexdigest()[:8]
        )
        job = k8s.batch.v1.Job(
            f"{name}-migrate",
            metadata=job_hash.apply(lambda h: meta(f"mlflow-db-migrate-{h}")),
            spec={
                "backoffLimit": 2,
                "activeDeadlineSeconds": 1800,
                "template": {
                    "metadata": {"labels": {**labels, "app.kubernetes.io/component": "migration"}},
                    "spec": {
                        "restartPolicy": "Never",
                        "serviceAccountName": APP,
                        "automountServiceAccountToken": False,
                        "securityContext": pod_security,
                        "containers": [
                            {
                                "name": "migrate",
                                "image": image,
                                "command": migration.apply(lambda m: list(m.argv)),
                                "env": migration.apply(lambda m: k8s_env(m.env)),
                                "resources": {
                                    "requests": {"cpu": "100m", "memory": "512Mi"},
                                    "limits": {"cpu": "1", "memory": "1Gi"},
                                },
                                "securityContext": container_security,
                                "volumeMounts": scratch_mounts,
                            }
                        ],
                        "volumes": scratch,
                    },
                },
            },
            opts=pulumi.ResourceOptions(
                parent=self, provider=provider, depends_on=[secret, *(depends_on or [])], delete_before_replace=True
            ),
        )

        def deployment(
            resource_name: str, k8s_name: str, replicas: int, pod_spec: pulumi.Output[ServerSpec], role: str
        ) -> k8s.apps.v1.Deployment:
            selector = {**labels, "app.kubernetes.io/component": role}
            probe = {"httpGet": {"path": "/health", "port": "http"}, "timeoutSeconds": 5}
            return k8s.apps.v1.Deployment(
                resource_name,
                metadata=meta(k8s_name),
                spec={
                    "replicas": replicas,
                    "selector": {"matchLabels": selector},
                    "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                    "template": {
                        "metadata": {
                            "labels": selector,
                            "annotations": {
                                "checksum/auth-ini": auth_ini.apply(lambda t: hashlib.sha256(t.encode()).hexdigest())
                            },
                        },
                        "spec": {
                            "serviceAccountName": APP,
                            "automountServiceAccountToken": False,
                            "securityContext": pod_security,
                            "terminationGracePeriodSeconds": s.graceful_timeout_seconds + 15,
                            "topologySpreadConstraints": [
                                {
                                    "maxSkew": 1,
                                    "topologyKey": key,
                                    "whenUnsatisfiable": "ScheduleAnyway",
                                    "labelSelector": {"matchLabels": selector},
                                }
                                for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
                            ],
                            "containers": [
                                {
                                    "name": "mlflow",
                                    "image": image,
                                    "command": pod_spec.apply(lambda sp: list(sp.argv)),
                                    "env": pod_spec.apply(
                                        lambda sp: k8s_env(sp.env) + [{"name": "HOME", "value": "/home/mlflow"}]
                                    ),
                                    "ports": [{"name": "http", "containerPort": s.port}],
                                    "resources": {
                                        "requests": {"cpu": s.cpu_request, "memory": s.memory_request},
                                        "limits": {"cpu": s.cpu_limit, "memory": s.memory_limit},
                                    },
                                    "startupProbe": {**probe, "periodSeconds": 5, "failureThreshold": 36},
                                    "livenessProbe": {**probe, "periodSeconds": 15, "failureThreshold": 4},
                                    "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 2},
                                    # Let the ALB deregister the pod before gunicorn stops accepting.
                                    "lifecycle": {"preStop": {"sleep": {"seconds": 10}}},
                                    "securityContext": container_security,
                                    "volumeMounts": [
                                        {"name": "auth", "mountPath": AUTH_DIR, "readOnly": True},
                                        *scratch_mounts,
                                    ],
                                }
                            ],
                            "volumes": [{"name": "auth", "configMap": {"name": "mlflow-auth"}}, *scratch],
                        },
                    },
                },
                opts=pulumi.ResourceOptions(
                    parent=self, provider=provider, depends_on=[job, secret, config_map, account]
                ),
            )

        server = deployment(f"{name}-deployment", APP, s.replicas, spec, "server")
        if s.job_execution:  # MLflow's job runner and periodic tasks: exactly one replica
            deployment(f"{name}-primary", f"{APP}-jobs", 1, render(primary=True), "jobs")

        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata=meta(APP),
            spec={
                "minAvailable": 1 if s.replicas > 1 else 0,
                "selector": {"matchLabels": {**labels, "app.kubernetes.io/component": "server"}},
            },
            opts=ns_opts,
        )
        k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{name}-hpa",
            metadata=meta(APP),
            spec={
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": APP},
                "minReplicas": s.replicas,
                "maxReplicas": s.replica_ceiling,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": s.target_cpu_percent},
                        },
                    }
                ],
            },
            opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[server]),
        )
        service = k8s.core.v1.Service(
            f"{name}-svc",
            metadata=meta(APP),
            spec={
                "type": "ClusterIP",
                "selector": {"app.kubernetes.io/name": APP, "app.kubernetes.io/instance": config.environment},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            },
            opts=ns_opts,
        )
        k8s.networking.v1.NetworkPolicy(
            f"{name}-netpol",
            metadata=meta(APP),
            spec={
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": APP}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    {"from": [{"ipBlock": {"cidr": vpc_cidr}}], "ports": [{"port": s.port, "protocol": "TCP"}]}
                ],
                "egress": [
                    {
                        "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                        "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
                    },
                    {"to": [{"ipBlock": {"cidr": vpc_cidr}}], "ports": [{"port": 5432, "protocol": "TCP"}]},
                    # S3 and STS (IRSA) over HTTPS; no other egress.
                    {"ports": [{"port": 443, "protocol": "TCP"}]},
                ],
            },
            opts=ns_opts,
        )
        k8s.apiextensions.CustomResource(
            f"{name}-tgb",
            api_version="elbv2.k8s.aws/v1beta1",
            kind="TargetGroupBinding",
            metadata=meta(APP),
            spec={
                "serviceRef": {"name": APP, "port": 80},
                "targetGroupARN": target_group_arn,
                "targetType": "ip",
                "networking": {
                    "ingress": [
                        {
                            "from": [{"securityGroup": {"groupID": alb_security_group_id}}],
                            "ports": [{"protocol": "TCP", "port": s.port}],
                        }
                    ]
                },
            },
            opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[service, *(depends_on or [])]),
        )

        self.deployment = server
        self.in_cluster_url = f"http://{in_cluster_hosts(ns_name)[0]}"
        self.pod_security, self.container_security = pod_security, container_security
        self.namespace = namespace.metadata["name"]
        self.service_name = service.metadata["name"]
        self.register_outputs({"namespace": self.namespace, "service": self.service_name})
