"""The tracking server on Kubernetes, running exactly what `render_server` renders.

Namespace, IRSA service account, Secrets, the auth ini ConfigMap, a migration Job that must
finish before the Deployment rolls, the Deployment (non-root, read-only root FS, probes on
/health, spread over zones, maxUnavailable 0), PDB, HPA, Service, NetworkPolicy, and the
TargetGroupBinding that registers pod IPs with the ALB target group.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from ...config import StackConfig
from ...server_spec import (
    ADMIN_PASSWORD,
    DB_OWNER_PASSWORD,
    DB_OWNER_SECRET,
    DB_PASSWORD,
    FLASK_SECRET_KEY,
    SERVER_SECRET,
    Endpoints,
    ServerSpec,
    render_migration,
    render_server,
)
from .pods import CONTAINER_SECURITY, HOME, POD_SECURITY, SCRATCH_MOUNTS, SCRATCH_VOLUMES, k8s_env, labels, metadata

AUTH_DIR = "/etc/mlflow/auth"
APP = "mlflow-server"
#: The migration Job and the runbook pods: HTTP to the server or the database, no AWS role. The
#: server's account carries the IRSA role that may delete artifacts; they never run as it.
MAINTENANCE_ACCOUNT = "mlflow-maintenance"
#: The runbook pods' name label: the only in-cluster clients the server admits.
RUNBOOKS = "mlflow-runbooks"
#: The ops user's credentials (ScheduledRunbooks creates the Secret and the user).
OPS_SECRET = "mlflow-ops"


def in_cluster_hosts(namespace: str) -> tuple[str, ...]:
    """How in-cluster clients (the runbook CronJobs) address the Service: allowed Host headers."""
    return (f"{APP}.{namespace}.svc.cluster.local", f"{APP}.{namespace}.svc", f"{APP}.{namespace}")


def endpoints_for(config: StackConfig, db_host: str, bucket: str) -> Endpoints:
    return Endpoints(
        db_host=db_host,
        bucket=bucket,
        auth_config_path=f"{AUTH_DIR}/basic_auth.ini",
        trace_archival_config_path=f"{AUTH_DIR}/trace_archival.yaml",
        extra_allowed_hosts=in_cluster_hosts(config.namespace),
    )


@dataclass
class TrackingServerArgs:
    """What the server needs from the other components."""

    image: pulumi.Input[str]
    db_host: pulumi.Input[str]
    bucket: pulumi.Input[str]
    role_arn: pulumi.Input[str]
    db_password: pulumi.Input[str]  # the server's DML-only role
    db_owner_password: pulumi.Input[str]  # the RDS master user: migration Job only
    flask_secret_key: pulumi.Input[str]
    admin_password: pulumi.Input[str]
    target_group_arn: pulumi.Input[str]
    alb_security_group_id: pulumi.Input[str]
    vpc_cidr: pulumi.Input[str]
    #: Where the ALB's nodes live: the only network sources the server admits (besides runbook pods).
    alb_subnet_cidrs: pulumi.Input[list[str]]
    provider: k8s.Provider
    depends_on: list[pulumi.Resource] = field(default_factory=list)


class TrackingServer(pulumi.ComponentResource):
    namespace: pulumi.Output[str]
    service_name: pulumi.Output[str]
    deployment: k8s.apps.v1.Deployment
    in_cluster_url: str

    def __init__(
        self, name: str, config: StackConfig, args: TrackingServerArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("mlflow-platform:k8s:TrackingServer", name, None, opts)
        self._name, self._config, self._args = name, config, args
        self._ns = config.namespace
        self._labels = labels(APP, config.environment)
        namespace = self._namespace()
        self._ns_opts = pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=[namespace])
        spec = self._render(primary=False)
        # Every file the server reads, keyed by file name, in the ConfigMap mounted at AUTH_DIR.
        self._config_files = spec.apply(lambda sp: {path.rsplit("/", 1)[1]: text for path, text in sp.files.items()})
        prerequisites = [*self._identity(), self._migration_job()]
        # No replica count: the HPA owns it (its minReplicas is server.replicas).
        self.deployment = self._deployment(f"{name}-deployment", APP, None, spec, "server", prerequisites)
        if config.server.job_execution:  # MLflow's job runner and periodic tasks: exactly one replica
            self._deployment(f"{name}-primary", f"{APP}-jobs", 1, self._render(primary=True), "jobs", prerequisites)
        self._availability()
        service = self._service()
        self._network_policy()
        self._target_group_binding(service)
        if config.monitoring.service_monitor and config.server.prometheus:
            self._service_monitor(service)
        self.in_cluster_url = f"http://{in_cluster_hosts(self._ns)[0]}"
        self.namespace = namespace.metadata["name"]
        self.service_name = service.metadata["name"]
        self.register_outputs({"namespace": self.namespace, "service": self.service_name})

    def _meta(self, k8s_name: str, **extra) -> dict:
        return metadata(k8s_name, self._ns, self._labels, **extra)

    def _render(self, primary: bool) -> pulumi.Output[ServerSpec]:
        config = self._config
        return pulumi.Output.all(self._args.db_host, self._args.bucket).apply(
            lambda a: render_server(config, endpoints_for(config, a[0], a[1]), primary=primary)
        )

    def _namespace(self) -> k8s.core.v1.Namespace:
        restricted = {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/warn": "restricted",
        }
        return k8s.core.v1.Namespace(
            f"{self._name}-ns",
            metadata={"name": self._ns, "labels": restricted},
            opts=pulumi.ResourceOptions(parent=self, provider=self._args.provider),
        )

    def _identity(self) -> list[pulumi.Resource]:
        """The IRSA service account, the server Secret and the auth ini ConfigMap."""
        a, name = self._args, self._name
        account = k8s.core.v1.ServiceAccount(
            f"{name}-sa",
            metadata=self._meta(APP, annotations={"eks.amazonaws.com/role-arn": a.role_arn}),
            automount_service_account_token=False,
            opts=self._ns_opts,
        )
        maintenance = k8s.core.v1.ServiceAccount(
            f"{name}-maintenance-sa",
            metadata=self._meta(MAINTENANCE_ACCOUNT),
            automount_service_account_token=False,
            opts=self._ns_opts,
        )
        self._secret = k8s.core.v1.Secret(
            f"{name}-secret",
            metadata=self._meta(SERVER_SECRET),
            type="Opaque",
            string_data={
                DB_PASSWORD.key: pulumi.Output.secret(a.db_password),
                FLASK_SECRET_KEY.key: pulumi.Output.secret(a.flask_secret_key),
                ADMIN_PASSWORD.key: pulumi.Output.secret(a.admin_password),
            },
            opts=self._ns_opts,
        )
        # Its own Secret, referenced only by the migration Job's pod: no server pod can read it.
        self._owner_secret = k8s.core.v1.Secret(
            f"{name}-db-owner",
            metadata=self._meta(DB_OWNER_SECRET),
            type="Opaque",
            string_data={DB_OWNER_PASSWORD.key: pulumi.Output.secret(a.db_owner_password)},
            opts=self._ns_opts,
        )
        config_map = k8s.core.v1.ConfigMap(
            f"{name}-auth",
            metadata=self._meta("mlflow-auth"),
            data=self._config_files,
            opts=self._ns_opts,
        )
        self.maintenance_account = maintenance
        return [account, maintenance, self._secret, self._owner_secret, config_map]

    def _migration_job(self) -> k8s.batch.v1.Job:
        """The Job's name carries a hash of what it runs, so each new image or schema step re-runs it;
        pulumi-kubernetes waits for the Job to complete before the Deployment changes."""
        a, config = self._args, self._config
        migration = pulumi.Output.all(a.db_host, a.bucket).apply(
            lambda v: render_migration(config, Endpoints(db_host=v[0], bucket=v[1]))
        )
        job_hash = pulumi.Output.all(a.image, migration.apply(lambda m: list(m.argv))).apply(
            lambda v: hashlib.sha256(repr(v).encode()).hexdigest()[:8]
        )
        container = {
            "name": "migrate",
            "image": a.image,
            "command": migration.apply(lambda m: list(m.argv)),
            "env": migration.apply(lambda m: k8s_env(m.env)),
            "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
            "securityContext": CONTAINER_SECURITY,
            "volumeMounts": SCRATCH_MOUNTS,
        }
        pod = {
            "restartPolicy": "Never",
            "serviceAccountName": MAINTENANCE_ACCOUNT,
            "automountServiceAccountToken": False,
            "securityContext": POD_SECURITY,
            "containers": [container],
            "volumes": SCRATCH_VOLUMES,
        }
        return k8s.batch.v1.Job(
            f"{self._name}-migrate",
            metadata=job_hash.apply(lambda h: self._meta(f"mlflow-db-migrate-{h}")),
            spec={
                "backoffLimit": 2,
                "activeDeadlineSeconds": 1800,
                "template": {
                    "metadata": {"labels": {**self._labels, "app.kubernetes.io/component": "migration"}},
                    "spec": pod,
                },
            },
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=a.provider,
                depends_on=[self._secret, self._owner_secret, self.maintenance_account, *a.depends_on],
                delete_before_replace=True,
            ),
        )

    def _server_container(self, pod_spec: pulumi.Output[ServerSpec]) -> dict:
        s = self._config.server
        probe = {"httpGet": {"path": "/health", "port": "http"}, "timeoutSeconds": 5}
        return {
            "name": "mlflow",
            "image": self._args.image,
            "command": pod_spec.apply(lambda sp: list(sp.argv)),
            "env": pod_spec.apply(lambda sp: k8s_env(sp.env) + [{"name": "HOME", "value": HOME}]),
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
            "securityContext": CONTAINER_SECURITY,
            "volumeMounts": [{"name": "auth", "mountPath": AUTH_DIR, "readOnly": True}, *SCRATCH_MOUNTS],
        }

    def _deployment(
        self,
        resource_name: str,
        k8s_name: str,
        replicas: int | None,
        pod_spec: pulumi.Output[ServerSpec],
        role: str,
        prerequisites: list[pulumi.Resource],
    ) -> k8s.apps.v1.Deployment:
        selector = {**self._labels, "app.kubernetes.io/component": role}
        spread = [
            {
                "maxSkew": 1,
                "topologyKey": key,
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector},
            }
            for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
        ]
        checksum = self._config_files.apply(lambda f: hashlib.sha256(repr(sorted(f.items())).encode()).hexdigest())
        pod = {
            "serviceAccountName": APP,
            "automountServiceAccountToken": False,
            "securityContext": POD_SECURITY,
            "terminationGracePeriodSeconds": self._config.server.graceful_timeout_seconds + 15,
            "topologySpreadConstraints": spread,
            "containers": [self._server_container(pod_spec)],
            "volumes": [{"name": "auth", "configMap": {"name": "mlflow-auth"}}, *SCRATCH_VOLUMES],
        }
        return k8s.apps.v1.Deployment(
            resource_name,
            metadata=self._meta(k8s_name),
            spec={
                **({"replicas": replicas} if replicas is not None else {}),
                "selector": {"matchLabels": selector},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "template": {
                    "metadata": {"labels": selector, "annotations": {"checksum/config": checksum}},
                    "spec": pod,
                },
            },
            opts=pulumi.ResourceOptions(parent=self, provider=self._args.provider, depends_on=prerequisites),
        )

    def _availability(self) -> None:
        """PodDisruptionBudget and HorizontalPodAutoscaler for the serving Deployment."""
        s = self._config.server
        k8s.policy.v1.PodDisruptionBudget(
            f"{self._name}-pdb",
            metadata=self._meta(APP),
            spec={
                "minAvailable": 1 if s.replicas > 1 else 0,
                "selector": {"matchLabels": {**self._labels, "app.kubernetes.io/component": "server"}},
            },
            opts=self._ns_opts,
        )
        cpu = {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": s.target_cpu_percent}}
        k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{self._name}-hpa",
            metadata=self._meta(APP),
            spec={
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": APP},
                "minReplicas": s.replicas,
                "maxReplicas": s.replica_ceiling,
                "metrics": [{"type": "Resource", "resource": cpu}],
            },
            opts=pulumi.ResourceOptions(parent=self, provider=self._args.provider, depends_on=[self.deployment]),
        )

    def _service(self) -> k8s.core.v1.Service:
        return k8s.core.v1.Service(
            f"{self._name}-svc",
            metadata=self._meta(APP),
            spec={
                "type": "ClusterIP",
                "selector": {"app.kubernetes.io/name": APP, "app.kubernetes.io/instance": self._config.environment},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            },
            opts=self._ns_opts,
        )

    def _network_policy(self) -> None:
        """Ingress from the ALB's subnets and the runbook pods only. A NetworkPolicy cannot name the
        ALB's security group, so its subnets stand in; the TargetGroupBinding adds the security-group
        rule. Kubelet probes come from the node's IP, which VPC CNI's policy agent always admits
        (aws/aws-network-policy-agent#56)."""
        port, vpc_cidr = self._config.server.port, self._args.vpc_cidr
        tcp = [{"port": port, "protocol": "TCP"}]
        from_alb = pulumi.Output.from_input(self._args.alb_subnet_cidrs).apply(
            lambda cidrs: [{"ipBlock": {"cidr": c}} for c in cidrs]
        )
        runbooks = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": RUNBOOKS}}}
        ingress = [{"from": from_alb, "ports": tcp}, {"from": [runbooks], "ports": tcp}]
        if self._config.monitoring.service_monitor:
            prometheus = self._config.monitoring.prometheus_namespace
            scraper = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": prometheus}}}
            ingress.append({"from": [scraper], "ports": tcp})
        dns = {
            "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
        }
        k8s.networking.v1.NetworkPolicy(
            f"{self._name}-netpol",
            metadata=self._meta(APP),
            spec={
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": APP}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": ingress,
                "egress": [
                    dns,
                    {"to": [{"ipBlock": {"cidr": vpc_cidr}}], "ports": [{"port": 5432, "protocol": "TCP"}]},
                    # S3 and STS (IRSA) over HTTPS; no other egress.
                    {"ports": [{"port": 443, "protocol": "TCP"}]},
                ],
            },
            opts=self._ns_opts,
        )

    def _service_monitor(self, service: k8s.core.v1.Service) -> None:
        """Prometheus Operator scrapes /metrics in-cluster, as the ops user (every route needs login)."""
        credentials = {"name": OPS_SECRET}
        k8s.apiextensions.CustomResource(
            f"{self._name}-servicemonitor",
            api_version="monitoring.coreos.com/v1",
            kind="ServiceMonitor",
            metadata=self._meta(APP),
            spec={
                "selector": {"matchLabels": self._labels},
                "endpoints": [
                    {
                        "port": "http",
                        "path": "/metrics",
                        "interval": "30s",
                        "basicAuth": {
                            "username": {**credentials, "key": "username"},
                            "password": {**credentials, "key": "password"},
                        },
                    }
                ],
            },
            opts=pulumi.ResourceOptions(parent=self, provider=self._args.provider, depends_on=[service]),
        )

    def _target_group_binding(self, service: k8s.core.v1.Service) -> None:
        a = self._args
        from_alb = {
            "from": [{"securityGroup": {"groupID": a.alb_security_group_id}}],
            "ports": [{"protocol": "TCP", "port": self._config.server.port}],
        }
        k8s.apiextensions.CustomResource(
            f"{self._name}-tgb",
            api_version="elbv2.k8s.aws/v1beta1",
            kind="TargetGroupBinding",
            metadata=self._meta(APP),
            spec={
                "serviceRef": {"name": APP, "port": 80},
                "targetGroupARN": a.target_group_arn,
                "targetType": "ip",
                "networking": {"ingress": [from_alb]},
            },
            opts=pulumi.ResourceOptions(parent=self, provider=a.provider, depends_on=[service, *a.depends_on]),
        )
