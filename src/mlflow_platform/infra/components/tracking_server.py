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
    MIGRATION_DEADLINE_SECONDS,
    SERVER_SECRET,
    ClusterWriters,
    Endpoints,
    ServerSpec,
    render_migration,
    render_release,
    render_server,
)
from .pods import (
    CONTAINER_SECURITY,
    HOME,
    POD_SECURITY,
    REPLACE_UNREADY,
    RUNBOOK_CRONJOBS,
    SCRATCH_MOUNTS,
    SCRATCH_VOLUMES,
    k8s_env,
    labels,
    metadata,
)

AUTH_DIR = "/etc/mlflow/auth"
APP = "mlflow-server"
#: The migration Job and the runbook pods: HTTP to the server or the database, no AWS role. The
#: server's account carries the IRSA role that may delete artifacts; they never run as it.
MAINTENANCE_ACCOUNT = "mlflow-maintenance"
#: The runbook pods' name label: the only in-cluster clients the server admits.
RUNBOOKS = "mlflow-runbooks"
#: The ops user's credentials (ScheduledRunbooks creates the Secret and the user).
OPS_SECRET = "mlflow-ops"
#: The migration and release Jobs: may scale the writers and snapshot the database, nothing else.
MIGRATION_ACCOUNT = "mlflow-migration"
JOB_DEADLINE_SECONDS = MIGRATION_DEADLINE_SECONDS
#: A terminating pod keeps serving this long while the ALB deregisters it; then gunicorn drains.
PRESTOP_SECONDS = 10


def deregistration_delay(config: StackConfig) -> int:
    """How long the ALB lets a deregistering pod finish in-flight requests: the preStop sleep plus
    gunicorn's graceful drain, so it never cuts a request the pod is still completing."""
    return PRESTOP_SECONDS + config.server.graceful_timeout_seconds


JOB_TIMEOUT = f"{JOB_DEADLINE_SECONDS // 60 + 5}m"


def cluster_writers(config: StackConfig, rds_instance: str) -> ClusterWriters:
    """Every workload that writes to the database: what a schema upgrade stops first."""
    deployments = (APP, f"{APP}-jobs") if config.server.job_execution else (APP,)
    cronjobs = tuple(f"mlflow-{n}" for n in RUNBOOK_CRONJOBS) if config.runbooks.enabled else ()
    server_pods = f"app.kubernetes.io/name={APP},app.kubernetes.io/component in (server,jobs)"
    return ClusterWriters(
        namespace=config.namespace,
        deployments=deployments,
        cronjobs=cronjobs,
        pod_selectors=(server_pods, f"app.kubernetes.io/name={RUNBOOKS}"),
        rds_instance=rds_instance,
    )


def mlflow_version() -> str:
    """The MLflow the image carries (server/requirements.txt pins the project's own version)."""
    import importlib.metadata

    return importlib.metadata.version("mlflow")


def in_cluster_hosts(namespace: str) -> tuple[str, ...]:
    """How in-cluster clients (the runbook CronJobs) address the Service: allowed Host headers."""
    return (f"{APP}.{namespace}.svc.cluster.local", f"{APP}.{namespace}.svc", f"{APP}.{namespace}")


def endpoints_for(
    config: StackConfig,
    db_host: str,
    bucket: str,
    sso: tuple[str, str, list[str]] | None = None,
    db_replica_host: str | None = None,
) -> Endpoints:
    """``sso``: the ALB's ARN (the only signer), its region's key endpoint and its subnets' CIDRs."""
    signer, key_endpoint, alb_cidrs = sso or (None, None, [])
    return Endpoints(
        db_host=db_host,
        db_replica_host=db_replica_host,
        bucket=bucket,
        auth_config_path=f"{AUTH_DIR}/basic_auth.ini",
        trace_archival_config_path=f"{AUTH_DIR}/trace_archival.yaml",
        sso_config_path=f"{AUTH_DIR}/sso.json",
        extra_allowed_hosts=in_cluster_hosts(config.namespace),
        sso_signer=signer,
        sso_key_endpoint=key_endpoint,
        sso_trusted_proxies=tuple(alb_cidrs),
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
    db_instance: pulumi.Input[str]  # its identifier: what the migration Job snapshots
    migration_role_arn: pulumi.Input[str]  # IRSA role of the migration Job (snapshots only)
    flask_secret_key: pulumi.Input[str]
    admin_password: pulumi.Input[str]
    target_group_arn: pulumi.Input[str]
    alb_security_group_id: pulumi.Input[str]
    vpc_cidr: pulumi.Input[str]
    #: Where the ALB's nodes live: the only network sources the server admits (besides runbook pods).
    alb_subnet_cidrs: pulumi.Input[list[str]]
    provider: k8s.Provider
    #: With ``sso``: the ALB that signs identity headers, and where its region publishes the keys.
    alb_arn: pulumi.Input[str] | None = None
    alb_key_endpoint: pulumi.Input[str] | None = None
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    #: With ``database.readReplica``: the replica's endpoint, which searches and pages read from.
    db_replica_host: pulumi.Input[str] | None = None


class TrackingServer(pulumi.ComponentResource):
    namespace: pulumi.Output[str]
    service_name: pulumi.Output[str]
    deployment: k8s.apps.v1.Deployment
    #: The release Job: done once the new version serves (after a coordinated upgrade, too).
    rollout_done: k8s.batch.v1.Job
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
        self._writers = pulumi.Output.from_input(args.db_instance).apply(lambda i: cluster_writers(config, i))
        identity = self._identity()
        migration_rbac = self._migration_rbac()
        prerequisites = [*identity, self._migration_job(migration_rbac)]
        # No replica count: the HPA owns it (its minReplicas is server.replicas).
        self.deployment = self._deployment(f"{name}-deployment", APP, None, spec, "server", prerequisites)
        deployments = [self.deployment]
        if config.server.job_execution:  # MLflow's job runner and periodic tasks: exactly one replica
            primary = self._render(primary=True)
            deployments.append(self._deployment(f"{name}-primary", f"{APP}-jobs", 1, primary, "jobs", prerequisites))
        self.rollout_done = self._release_job(deployments, migration_rbac)
        self._availability()
        service = self._service()
        self._network_policy()
        self._target_group_binding(service)
        if config.monitoring.service_monitor and config.server.prometheus:
            self._service_monitor(service)
            self._alert_rules()
        self.in_cluster_url = f"http://{in_cluster_hosts(self._ns)[0]}"
        self.namespace = namespace.metadata["name"]
        self.service_name = service.metadata["name"]
        self.register_outputs({"namespace": self.namespace, "service": self.service_name})

    def _meta(self, k8s_name: str, **extra) -> dict:
        return metadata(k8s_name, self._ns, self._labels, **extra)

    def _render(self, primary: bool) -> pulumi.Output[ServerSpec]:
        config, a = self._config, self._args
        sso = pulumi.Output.all(a.alb_arn, a.alb_key_endpoint, a.alb_subnet_cidrs) if config.sso else None
        return pulumi.Output.all(a.db_host, a.bucket, sso, a.db_replica_host).apply(
            lambda v: render_server(config, endpoints_for(config, v[0], v[1], v[2], v[3]), primary=primary)
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

    def _migration_rbac(self) -> list[pulumi.Resource]:
        """The migration and release Jobs' account: IRSA for the snapshot, and a Role that may scale
        exactly the writer Deployments, suspend exactly the runbook CronJobs and list pods."""
        account = k8s.core.v1.ServiceAccount(
            f"{self._name}-migration-sa",
            metadata=self._meta(
                MIGRATION_ACCOUNT, annotations={"eks.amazonaws.com/role-arn": self._args.migration_role_arn}
            ),
            automount_service_account_token=False,  # only the pods that need the API mount it
            opts=self._ns_opts,
        )
        role = k8s.rbac.v1.Role(
            f"{self._name}-migration-role",
            metadata=self._meta(MIGRATION_ACCOUNT),
            rules=self._writers.apply(_writer_rules),
            opts=self._ns_opts,
        )
        binding = k8s.rbac.v1.RoleBinding(
            f"{self._name}-migration-binding",
            metadata=self._meta(MIGRATION_ACCOUNT),
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": MIGRATION_ACCOUNT},
            subjects=[{"kind": "ServiceAccount", "name": MIGRATION_ACCOUNT, "namespace": self._ns}],
            opts=pulumi.ResourceOptions(parent=self, provider=self._args.provider, depends_on=[account, role]),
        )
        return [account, role, binding]

    def _job(
        self, resource: str, k8s_name: str, component: str, command, env, depends_on: list[pulumi.Resource]
    ) -> k8s.batch.v1.Job:
        """A one-shot step as the migration account. Its name carries a hash of the image and the
        command, so each new image re-runs it; pulumi-kubernetes waits for a Job to complete."""
        a = self._args
        job_hash = pulumi.Output.all(a.image, command).apply(lambda v: hashlib.sha256(repr(v).encode()).hexdigest()[:8])
        container = {
            "name": component,
            "image": a.image,
            "command": command,
            "env": env,
            "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
            "securityContext": CONTAINER_SECURITY,
            "volumeMounts": SCRATCH_MOUNTS,
        }
        pod = {
            "restartPolicy": "Never",
            "serviceAccountName": MIGRATION_ACCOUNT,
            "automountServiceAccountToken": True,  # it scales the writers through the API
            "securityContext": POD_SECURITY,
            "containers": [container],
            "volumes": SCRATCH_VOLUMES,
        }
        return k8s.batch.v1.Job(
            resource,
            metadata=job_hash.apply(lambda h: self._meta(f"{k8s_name}-{h}", annotations=REPLACE_UNREADY)),
            spec={
                "backoffLimit": 0,  # a failed schema step is not retried behind on-call's back
                "activeDeadlineSeconds": JOB_DEADLINE_SECONDS,
                "template": {
                    "metadata": {"labels": {**self._labels, "app.kubernetes.io/component": component}},
                    "spec": pod,
                },
            },
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=a.provider,
                depends_on=depends_on,
                delete_before_replace=True,
                # pulumi-kubernetes gives up on a Job after 10 minutes unless told otherwise; a
                # snapshot of a large instance takes longer. Wait as long as the Job may run.
                custom_timeouts=pulumi.CustomTimeouts(create=JOB_TIMEOUT, update=JOB_TIMEOUT),
            ),
        )

    def _migration_job(self, rbac: list[pulumi.Resource]) -> k8s.batch.v1.Job:
        """Before any new pod: decide from the schema revisions; when they differ, stop the writers,
        snapshot, migrate and verify (``database.upgrade``)."""
        a, config = self._args, self._config
        migration = pulumi.Output.all(a.db_host, a.bucket, self._writers).apply(
            lambda v: render_migration(config, Endpoints(db_host=v[0], bucket=v[1]), v[2])
        )
        depends_on = [self._secret, self._owner_secret, *rbac, *a.depends_on]
        return self._job(
            f"{self._name}-migrate",
            "mlflow-db-migrate",
            "migration",
            migration.apply(lambda m: list(m.argv)),
            migration.apply(lambda m: k8s_env(m.env)),
            depends_on,
        )

    def _release_job(self, deployments: list[pulumi.Resource], rbac: list[pulumi.Resource]) -> k8s.batch.v1.Job:
        """After the rollout: scale back what a coordinated upgrade stopped (a no-op otherwise)."""
        command = self._writers.apply(lambda w: list(render_release(w)))
        env = [{"name": "PYTHONUNBUFFERED", "value": "1"}]
        return self._job(f"{self._name}-release", "mlflow-db-release", "release", command, env, [*deployments, *rbac])

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
            "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SECONDS}}},
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
        # The version label tells the next upgrade what it upgrades from (its snapshot's name).
        versioned = {**self._labels, "app.kubernetes.io/version": mlflow_version()}
        return k8s.apps.v1.Deployment(
            resource_name,
            metadata=metadata(k8s_name, self._ns, versioned),
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
        clients = [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": RUNBOOKS}}}]
        if self._config.teams:  # the teams sync Job (TeamSync) calls the API as the admin
            clients.append({"podSelector": {"matchLabels": {"app.kubernetes.io/name": "mlflow-teams"}}})
        ingress = [{"from": from_alb, "ports": tcp}, {"from": clients, "ports": tcp}]
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

    def _alert_rules(self) -> None:
        """The alert rules beside the ServiceMonitor, for the same Prometheus (alerting.py; promtool-tested)."""
        from ...alerting import rules

        k8s.apiextensions.CustomResource(
            f"{self._name}-alerts",
            api_version="monitoring.coreos.com/v1",
            kind="PrometheusRule",
            metadata=self._meta(APP),
            spec=rules(self._config),
            opts=pulumi.ResourceOptions(parent=self, provider=self._args.provider),
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
            # The controller's webhook refuses any change to these (targetgroupbinding_validator.go,
            # checkImmutableFields): a new target group (a `server.port` change) means a new binding,
            # under the same name, so the old one goes first.
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=a.provider,
                depends_on=[service, *a.depends_on],
                replace_on_changes=[f"spec.{field}" for field in TARGET_GROUP_BINDING_IMMUTABLE],
                delete_before_replace=True,
            ),
        )


#: TargetGroupBinding fields the aws-load-balancer-controller webhook never lets change (v3.5.0,
#: webhooks/elbv2/targetgroupbinding_validator.go).
TARGET_GROUP_BINDING_IMMUTABLE = ("targetGroupARN", "targetType", "ipAddressType", "vpcID")


def _writer_rules(writers: ClusterWriters) -> list[dict]:
    rules = [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments", "deployments/scale"],
            "resourceNames": list(writers.deployments),
            "verbs": ["get", "patch"],
        },
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    ]
    if writers.cronjobs:
        rules.append(
            {
                "apiGroups": ["batch"],
                "resources": ["cronjobs"],
                "resourceNames": list(writers.cronjobs),
                "verbs": ["get", "patch"],
            }
        )
    return rules
