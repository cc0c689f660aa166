"""Typed stack configuration: the one model the Pulumi program and the local platform share.

A stack file (``stacks/Pulumi.<stack>.yaml``) holds ``mlflow-platform:<section>`` keys. Every
setting that differs between environments lives there, is validated here, and a bad value fails
with an error that names the key (as it is spelled in the stack file) and says how to fix it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

PROJECT = "mlflow-platform"

#: Connection pools each server process opens: tracking store, model registry store, job store,
#: and (with basic-auth) the auth store. Each may grow to pool_size + max_overflow.
ENGINES_WITHOUT_AUTH = 3
ENGINES_WITH_AUTH = 4
#: Besides its gunicorn workers, every replica runs the ``mlflow server`` parent, which opens the
#: stores before forking and keeps its pools (measured: 4 connections held at idle).
PARENT_PROCESSES_PER_REPLICA = 1
#: With job execution, one extra replica also runs the job runner and the periodic-task consumer.
JOB_PROCESSES = 2

#: RDS sets max_connections to LEAST(DBInstanceClassMemory / 9531392, 5000). Memory in GiB per
#: instance class; an unlisted class needs an explicit ``database.maxConnections``.
RDS_CLASS_MEMORY_GIB: dict[str, float] = {
    "db.t4g.micro": 1,
    "db.t4g.small": 2,
    "db.t4g.medium": 4,
    "db.t4g.large": 8,
    "db.t4g.xlarge": 16,
    "db.t4g.2xlarge": 32,
    "db.m6g.large": 8,
    "db.m6g.xlarge": 16,
    "db.m6g.2xlarge": 32,
    "db.m6g.4xlarge": 64,
    "db.m7g.large": 8,
    "db.m7g.xlarge": 16,
    "db.m7g.2xlarge": 32,
    "db.m7g.4xlarge": 64,
    "db.r6g.large": 16,
    "db.r6g.xlarge": 32,
    "db.r6g.2xlarge": 64,
    "db.r6g.4xlarge": 128,
    "db.r7g.large": 16,
    "db.r7g.xlarge": 32,
    "db.r7g.2xlarge": 64,
    "db.r7g.4xlarge": 128,
}
# DBInstanceClassMemory is the class memory less what the OS and RDS processes reserve;
# 90 % of nominal keeps the estimate on the safe side.
_RDS_USABLE_MEMORY_FRACTION = 0.9


class ConfigError(Exception):
    """A stack configuration problem, phrased for the person editing the stack file."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        lines = [f"{source}: invalid configuration"]
        lines += [f"  - {key}: {message}" for key, message in problems]
        super().__init__("\n".join(lines))


class _Section(BaseModel):
    """Stack-file sections are camelCase, strict, and reject unknown keys (typos surface)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class ServerConfig(_Section):
    """The tracking server process: gunicorn tuning, auth and host checks."""

    replicas: int = Field(2, ge=1, le=50, description="Pods serving traffic (minimum under HPA).")
    max_replicas: int | None = Field(
        None, ge=1, le=100, description="HPA ceiling; defaults to `replicas`. Counted in the budget."
    )
    # Defaults measured by benchmarks/tracking_load.py on 2 cores (the pod's default CPU limit),
    # basic-auth on, 32 clients, candidates interleaved (docs/benchmarks.md, docs/decisions/0001): 4 gthread
    # workers x 2 threads tied the best throughput (sync 4, gthread 4x1) on every operation and
    # beat 4x4 by ~30% on log-metric and model-by-alias — MLflow's request path is CPU-bound
    # Python, so threads past 2 only contend for the GIL. The sync worker had the lower p95 but
    # kills any request older than timeoutSeconds (a large proxied upload) and drops keep-alive.
    workers: int = Field(4, ge=1, le=64, description="gunicorn worker processes per pod (2 per core).")
    worker_class: Literal["sync", "gthread"] = Field(
        "gthread", description="gthread: keep-alive, and a long upload is not killed at the worker timeout."
    )
    threads: int = Field(2, ge=1, le=64, description="Threads per gthread worker; more only contend for the GIL.")
    timeout_seconds: int = Field(
        300,
        ge=10,
        le=3600,
        description="Silent-worker limit; with sync it also caps one request (the largest proxied upload).",
    )
    keep_alive_seconds: int = Field(
        75, ge=1, le=3600, description="Idle keep-alive; must exceed the load balancer idle timeout."
    )
    graceful_timeout_seconds: int = Field(30, ge=1, le=600, description="Drain time on restart.")
    max_requests: int = Field(2000, ge=0, description="Recycle a worker after this many requests (0 disables).")
    max_requests_jitter: int = Field(200, ge=0, description="Random spread so workers don't recycle together.")
    port: int = Field(5000, ge=1, le=65535, description="Container port the server listens on.")
    basic_auth: bool = Field(
        True,
        description="Basic auth on every route (`--app-name platform-auth`: MLflow's basic-auth on its Flask "
        "routes and its FastAPI-only ones, e.g. OTLP /v1/traces).",
    )
    prometheus: bool = Field(
        True, description="Prometheus metrics at /metrics (`--expose-prometheus`), counted across workers."
    )
    telemetry: bool = Field(
        False,
        description="Let MLflow send its server and UI usage data to MLflow's service (opt in). Off renders "
        "MLFLOW_DISABLE_TELEMETRY=true.",
    )
    webhook_local_targets: bool = Field(
        False,
        description="Let registry webhooks reach loopback and private addresses over http (MLflow's SSRF "
        "protection off). For a laptop's receivers only; refused in a deployed stack.",
    )
    auth_cache_ttl_seconds: int = Field(
        60,
        ge=0,
        le=3600,
        description="Cache verified credentials per worker; 0 re-hashes PBKDF2 on every request.",
    )
    permission_cache_ttl_seconds: int = Field(
        10,
        ge=0,
        le=300,
        description="Cache role and grant lookups (never the user record) and, with teams, a reading request's "
        "workspace per worker: a revoked grant stops working within this (at once on the worker that revoked "
        "it); 0 asks the database on every request.",
    )
    metric_history_page_size: int = Field(
        25000,
        ge=0,
        le=1_000_000,
        description="Most points one metric-history request returns; a client asking for more (or for all) gets "
        "this many and a next_page_token, as MLflow's client and UI page anyway. Applies with basicAuth (the "
        "platform's app); 0 serves whole histories in one response, which can hold a worker past its timeout.",
    )
    default_permission: Literal["READ", "EDIT", "MANAGE", "NO_PERMISSIONS"] | None = Field(
        None,
        description="Permission a user has on resources it was not granted anything on. Default: READ "
        "(MLflow's) in a stack without teams, NO_PERMISSIONS in a stack with teams.",
    )
    admin_username: str = Field("admin", min_length=1, description="Bootstrap admin user.")
    allowed_hosts: tuple[str, ...] = Field(
        (), description="Host headers the server accepts (public hostname); `host:*` is added."
    )
    cors_allowed_origins: tuple[str, ...] = Field((), description="Browser origins allowed to call the API.")
    cpu_request: str = Field("500m", pattern=r"^\d+(\.\d+)?m?$", description="Pod CPU request.")
    memory_request: str = Field("1Gi", pattern=r"^\d+(Mi|Gi)$", description="Pod memory request.")
    memory_limit: str = Field("2Gi", pattern=r"^\d+(Mi|Gi)$", description="Pod memory limit (OOM guard).")
    cpu_limit: str = Field("2", pattern=r"^\d+(\.\d+)?m?$", description="Pod CPU limit.")
    target_cpu_percent: int = Field(70, ge=10, le=100, description="HPA CPU utilisation target.")
    job_execution: bool = Field(
        False,
        description="MLflow's GenAI job runner (online scoring, trace archival) and its periodic "
        "tasks, on exactly one replica. Off: it forks ~8 processes (~1.5 GB) per pod.",
    )

    @property
    def replica_ceiling(self) -> int:
        return self.max_replicas or self.replicas

    @model_validator(mode="after")
    def _check(self) -> ServerConfig:
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise ValueError(
                f"maxReplicas ({self.max_replicas}) is below replicas ({self.replicas}); raise maxReplicas or remove it"
            )
        if self.max_requests and self.max_requests_jitter >= self.max_requests:
            raise ValueError("maxRequestsJitter must be smaller than maxRequests")
        if self.graceful_timeout_seconds > self.timeout_seconds:
            raise ValueError("gracefulTimeoutSeconds must not exceed timeoutSeconds")
        for host in self.allowed_hosts:
            if host == "*" or not host or " " in host:
                raise ValueError(f"allowedHosts entry {host!r} is not a hostname; list the public hostname(s)")
        return self


class ReadReplicaConfig(_Section):
    """An RDS read replica that MLflow's searches and pages read from (``--read-replica-backend-store-uri``)."""

    instance_class: str | None = Field(
        None,
        pattern=r"^db\.[a-z0-9]+\.[a-z0-9]+$",
        description="RDS instance class of the replica; the primary's when absent.",
    )
    lag_alarm_seconds: int = Field(
        60,
        ge=5,
        le=3600,
        description="Alarm when the replica stays this many seconds behind for 15 minutes (AWS/RDS ReplicaLag).",
    )


class DatabaseConfig(_Section):
    """PostgreSQL: instance sizing and the SQLAlchemy pool every server engine uses."""

    engine_version: str = Field(
        "17",
        description="PostgreSQL major version; RDS picks the newest orderable minor and upgrades minors "
        "(autoMinorVersionUpgrade). A pinned minor stops being creatable when RDS retires it, and a "
        "later `up` would try to downgrade an instance RDS has upgraded.",
    )
    instance_class: str = Field(
        "db.t4g.medium",
        pattern=r"^db\.[a-z0-9]+\.[a-z0-9]+$",
        description="RDS instance class; sets the default max_connections.",
    )
    allocated_storage_gb: int = Field(20, ge=20, le=65536, description="Initial storage (gp3).")
    max_allocated_storage_gb: int = Field(100, ge=20, le=65536, description="Storage autoscaling ceiling.")
    max_connections: int | None = Field(
        None,
        ge=10,
        le=65536,
        description="Server max_connections; default derived from the instance class like RDS does.",
    )
    reserved_connections: int = Field(
        10, ge=3, description="Kept free for superuser, migrations, backups and on-call psql."
    )
    # A thread holds at most one connection per engine at a time, so pool + overflow = threads + 1
    # never makes a thread wait, and keeps the fleet's budget small (60 connections per replica).
    pool_size: int = Field(2, ge=1, le=100, description="MLFLOW_SQLALCHEMYSTORE_POOL_SIZE (per engine, per process).")
    max_overflow: int = Field(1, ge=0, le=100, description="MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW.")
    pool_recycle_seconds: int = Field(1800, ge=60, description="MLFLOW_SQLALCHEMYSTORE_POOL_RECYCLE.")
    multi_az: bool = Field(True, description="Standby in a second AZ (RDS Multi-AZ).")
    apply_immediately: bool = Field(
        False,
        description="Apply class, storage and engine-major changes during `pulumi up` instead of the next "
        "maintenance window (a major engine upgrade needs it; see docs/deploying.md, day 2).",
    )
    client_security_group_ids: tuple[str, ...] = Field(
        (),
        description="More security groups admitted to PostgreSQL: an existing cluster's node or pod groups "
        "when its nodes do not carry the cluster security group (Karpenter, self-managed groups).",
    )
    deletion_protection: bool = Field(True, description="Refuse `pulumi destroy` of the instance.")
    final_snapshot: bool = Field(True, description="Take a final snapshot when the instance is deleted.")
    backup_retention_days: int = Field(14, ge=1, le=35, description="Automated backups and PITR window.")
    performance_insights_retention_days: int = Field(7, description="7 (free tier) or a multiple of 31.")
    slow_query_ms: int = Field(500, ge=0, description="log_min_duration_statement.")
    tracking_database: str = Field(
        "mlflow", pattern=r"^[a-z_][a-z0-9_]{0,62}$", description="Database for runs, experiments and the registry."
    )
    auth_database: str = Field(
        "mlflow_auth", pattern=r"^[a-z_][a-z0-9_]{0,62}$", description="Database for basic-auth users and permissions."
    )
    username: str = Field(
        "mlflow",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="Schema owner (the RDS master user); only the migration step connects as it.",
    )
    read_replica: ReadReplicaConfig | None = Field(
        None,
        description="A read replica for searches and metric histories (`{}` for the defaults); every other "
        "read, and every search while the replica is down, goes to the primary (docs/sizing.md).",
    )
    app_username: str = Field(
        "mlflow_app",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="Least-privilege role (DML only) the server and runbooks connect as; the migration "
        "step creates it and grants it the tables.",
    )

    @field_validator("engine_version")
    @classmethod
    def _major_version_only(cls, value: str) -> str:
        if not re.fullmatch(r"\d+", value):
            raise ValueError(
                f'{value!r} is not a PostgreSQL major version; give the major only (e.g. "17"): RDS '
                "stops creating retired minors (16.5-16.8 since May 2026) and upgrades minors itself"
            )
        return value

    @property
    def effective_max_connections(self) -> int | None:
        if self.max_connections is not None:
            return self.max_connections
        memory = RDS_CLASS_MEMORY_GIB.get(self.instance_class)
        if memory is None:
            return None
        usable = memory * 1024**3 * _RDS_USABLE_MEMORY_FRACTION
        return min(int(usable // 9531392), 5000)

    @model_validator(mode="after")
    def _check(self) -> DatabaseConfig:
        if self.max_allocated_storage_gb < self.allocated_storage_gb:
            raise ValueError("maxAllocatedStorageGb must be at least allocatedStorageGb")
        if self.tracking_database == self.auth_database:
            raise ValueError("trackingDatabase and authDatabase must differ")
        if self.username == self.app_username:
            raise ValueError("appUsername must differ from username: the server must not connect as the schema owner")
        days = self.performance_insights_retention_days
        if days != 7 and (days % 31 or days > 731):
            raise ValueError("performanceInsightsRetentionDays must be 7 or a multiple of 31 up to 731")
        return self


class ArtifactStoreConfig(_Section):
    """Where the server proxies artifacts: ``s3://<bucket>/<prefix>``."""

    bucket: str | None = Field(None, description="Bucket name; derived from the environment when absent.")
    prefix: str = Field(
        ...,
        pattern=r"^[a-z0-9][a-z0-9-]*(/[a-z0-9][a-z0-9-]*)*$",
        description="Key prefix under which all artifacts live (e.g. `prod`).",
    )
    infrequent_access_days: int = Field(90, ge=30, description="Move `<prefix>/` objects to STANDARD_IA.")
    glacier_days: int = Field(365, ge=1, description="Then to GLACIER.")
    tmp_expiration_days: int = Field(7, ge=1, description="Expire `tmp/` objects.")
    noncurrent_version_expiration_days: int = Field(30, ge=1, description="Expire overwritten/deleted versions.")
    abort_incomplete_multipart_days: int = Field(7, ge=1, description="Abort unfinished multipart uploads.")
    force_destroy: bool = Field(False, description="Let `pulumi destroy` delete a non-empty bucket.")

    @model_validator(mode="after")
    def _lifecycle(self) -> ArtifactStoreConfig:
        if self.glacier_days <= self.infrequent_access_days:
            raise ValueError("glacierDays must be later than infrequentAccessDays")
        return self

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", value) or ".." in value:
            raise ValueError(f"{value!r} is not a valid S3 bucket name (3-63 lowercase letters, digits, dots, hyphens)")
        return value


class LoadBalancerConfig(_Section):
    """The ALB in front of the server (local: nothing in front, but the same check runs)."""

    hostname: str | None = Field(None, description="Public DNS name of the tracking server.")
    idle_timeout_seconds: int = Field(60, ge=1, le=4000, description="ALB idle timeout.")
    allowed_cidrs: tuple[str, ...] = Field(("0.0.0.0/0",), description="Who may reach 80/443.")
    certificate_arn: str | None = Field(None, description="Existing ACM certificate for `hostname`.")
    route53_zone_id: str | None = Field(
        None, description="Hosted zone: validates a new ACM certificate and holds the alias record."
    )
    internal: bool = Field(False, description="A private (internal) load balancer.")
    deletion_protection: bool = Field(True, description="Refuse `pulumi destroy` of the ALB.")
    ssl_policy: str = Field("ELBSecurityPolicy-TLS13-1-2-2021-06", description="TLS 1.2 + 1.3 only.")

    @field_validator("allowed_cidrs")
    @classmethod
    def _cidrs(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            try:
                ipaddress.ip_network(value, strict=True)
            except ValueError as exc:
                raise ValueError(f"{value!r} is not a CIDR block ({exc}); write e.g. 10.0.0.0/8") from None
        return values


class NetworkConfig(_Section):
    """Create a VPC, or bring one: then name its VPC and subnets."""

    vpc_id: str | None = Field(None, description="Existing VPC; then both subnet lists are required.")
    public_subnet_ids: tuple[str, ...] = Field((), description="Existing public subnets (ALB).")
    private_subnet_ids: tuple[str, ...] = Field((), description="Existing private subnets (RDS, pods).")
    cidr: str = Field("10.40.0.0/16", description="CIDR of a created VPC.")
    availability_zones: int = Field(2, ge=2, le=6, description="AZs a created VPC spans.")
    nat_gateway_per_az: bool = Field(True, description="One NAT per AZ (HA) or a single shared one.")

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        try:
            network = ipaddress.ip_network(value, strict=True)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a CIDR block ({exc}); write e.g. 10.40.0.0/16") from None
        if not 16 <= network.prefixlen <= 20:
            raise ValueError(f"{value!r}: use a /16 to /20 so each subnet gets room")
        return value

    @model_validator(mode="after")
    def _existing(self) -> NetworkConfig:
        if self.vpc_id and (len(self.public_subnet_ids) < 2 or len(self.private_subnet_ids) < 2):
            raise ValueError("with vpcId, list at least 2 publicSubnetIds and 2 privateSubnetIds (2 AZs)")
        if not self.vpc_id and (self.public_subnet_ids or self.private_subnet_ids):
            raise ValueError("subnet ids need vpcId; remove them to create a VPC instead")
        return self

    @property
    def create_vpc(self) -> bool:
        return self.vpc_id is None


class ClusterConfig(_Section):
    """The EKS cluster the server runs on: an existing one by name, or one this stack creates."""

    name: str | None = Field(None, description="Existing EKS cluster name (omit with `create: true`).")
    create: bool = Field(False, description="Create the cluster, a managed node group, OIDC and the LB controller.")
    kubeconfig_context: str | None = Field(
        None, description="Use this context of the ambient kubeconfig for an existing cluster."
    )
    version: str = Field(
        "1.35", pattern=r"^1\.\d+$", description="Kubernetes version of a created cluster (upgrade policy STANDARD)."
    )
    public_access_cidrs: tuple[str, ...] | None = Field(
        None,
        description="CIDRs that may reach a created cluster's public API endpoint (CI runners, admins); "
        "`[]` keeps the endpoint private. Required with `create: true`.",
    )
    node_instance_types: tuple[str, ...] = Field(("m6i.large",), description="Managed node group types.")
    node_min_size: int = Field(2, ge=1, description="Managed node group minimum size.")
    node_desired_size: int = Field(2, ge=1, description="Managed node group desired size.")
    node_max_size: int = Field(4, ge=1, description="Managed node group maximum size.")
    namespace: str = Field("mlflow", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", description="Kubernetes namespace.")

    @model_validator(mode="after")
    def _choice(self) -> ClusterConfig:
        if bool(self.name) == self.create:
            raise ValueError("set exactly one of cluster.name (existing cluster) or cluster.create: true")
        if not self.node_min_size <= self.node_desired_size <= self.node_max_size:
            raise ValueError("nodeMinSize <= nodeDesiredSize <= nodeMaxSize must hold")
        if any(_prefix_length(c) == 0 for c in self.public_access_cidrs or ()):
            raise ValueError(
                "cluster.publicAccessCidrs opens the Kubernetes API to the whole internet; list your CI "
                "runners' and admins' CIDRs, or [] for a private endpoint"
            )
        return self


def _prefix_length(cidr: str) -> int:
    import ipaddress

    try:
        return ipaddress.ip_network(cidr, strict=False).prefixlen
    except ValueError:
        raise ValueError(f"cluster.publicAccessCidrs: {cidr!r} is not a CIDR (e.g. 203.0.113.0/24)") from None


class ImageConfig(_Section):
    """The server image: built from server/Dockerfile into ECR, or a prebuilt reference."""

    reference: str | None = Field(None, description="Prebuilt image (`registry/repo:tag` or `@sha256:`).")
    build: bool = Field(True, description="Build server/Dockerfile and push to a created ECR repository.")

    @model_validator(mode="after")
    def _choice(self) -> ImageConfig:
        if self.reference and self.build:
            raise ValueError("set image.build: false when giving image.reference")
        if not self.reference and not self.build:
            raise ValueError("give image.reference or set image.build: true")
        if self.reference and ":" not in self.reference.rsplit("/", 1)[-1] and "@" not in self.reference:
            raise ValueError(f"image.reference {self.reference!r} needs an explicit tag or digest")
        return self


class MonitoringConfig(_Section):
    """CloudWatch alarms to an SNS topic, and a dashboard."""

    alarm_emails: tuple[str, ...] = Field((), description="Subscribed to the alarm topic.")
    p95_latency_seconds: float = Field(0.5, gt=0, description="ALB p95 TargetResponseTime threshold (the SLO).")
    error_rate_percent: float = Field(1.0, gt=0, le=100, description="5xx share of requests.")
    free_storage_gb: int = Field(10, ge=1, description="RDS FreeStorageSpace floor.")
    storage_runway_days: int = Field(
        7, ge=1, le=90, description="Alarm when RDS free storage would run out within this many days (trace growth)."
    )
    cpu_percent: int = Field(80, ge=1, le=100, description="RDS CPU ceiling.")
    artifact_store_max_gb: int = Field(
        1000, ge=1, description="Alarm when the artifact bucket (every storage class) holds more than this."
    )
    artifact_store_max_objects: int = Field(
        10_000_000, ge=1, description="Alarm when the artifact bucket holds more objects than this."
    )
    service_monitor: bool = Field(
        False,
        description="Render a Prometheus Operator ServiceMonitor for /metrics (the cluster must have its CRDs).",
    )
    prometheus_namespace: str = Field(
        "monitoring",
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Namespace of the Prometheus that scrapes /metrics; the server's NetworkPolicy admits it.",
    )


class GithubConfig(_Section):
    """GitHub Actions OIDC roles: read-only for previews, deploy for `pulumi up`."""

    repository: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", description="`owner/repo` allowed to assume the CI roles."
    )
    oidc_provider_arn: str | None = Field(
        None, description="GitHub OIDC provider ARN, when not the account's standard one (one per URL per account)."
    )
    create_oidc_provider: bool = Field(
        False,
        description="Create the account's GitHub OIDC provider. AWS allows one per URL per account: set this in "
        "exactly one stack per account; the others use arn:aws:iam::<account>:oidc-provider/"
        "token.actions.githubusercontent.com.",
    )
    deploy_environment: str | None = Field(
        None,
        description="GitHub Environment of the deploy jobs, the one the deploy role trusts (default: the stack).",
    )
    require_approval: bool = Field(
        False,
        description="Deploys wait for a reviewer on the GitHub Environment (`mlflow-platform ci check` verifies it).",
    )
    preview_environment: str | None = Field(
        None,
        description="GitHub Environment of the PR-preview jobs (default `<env>-preview`).",
    )
    drift_environment: str | None = Field(
        None,
        description="GitHub Environment of the nightly drift job (default `<env>-drift`); limit it to `main`.",
    )
    promotion_repositories: tuple[str, ...] = Field(
        (),
        description="Model repositories (`owner/repo`) whose promote-model jobs may take the promotion lock "
        "(a promote role is created only with them; never `repository` itself).",
    )

    @model_validator(mode="after")
    def _promoters_are_other_repositories(self) -> GithubConfig:
        if self.repository and self.repository in self.promotion_repositories:
            raise ValueError(
                "github.promotionRepositories lists this repository: its deploy jobs use the same GitHub "
                "Environments, so their tokens would also take the promotion role; promote from model repositories"
            )
        return self


class TracingConfig(_Section):
    """Trace retention: traces are rows in PostgreSQL until MLflow's trace archival moves them out."""

    archive_after: str | None = Field(
        None,
        pattern=r"^[1-9][0-9]*[mhd]$",
        description="Move traces older than this (e.g. `30d`) to the artifact bucket under `trace-archive/` "
        "(MLflow's server-owned trace archival; runs in the job runner, so needs server.jobExecution). "
        "Unset: traces stay in the database.",
    )
    archive_interval_seconds: int = Field(300, ge=60, le=86400, description="How often archival runs.")


class RunbooksConfig(_Section):
    """The weekly checklist on a schedule: CronJobs in the cluster running the project's image."""

    enabled: bool = Field(True, description="Create the runbook CronJobs.")
    reap_schedule: str = Field("17 * * * *", description="Cron for reap-stuck-runs (hourly).")
    reap_older_than_hours: float = Field(24, gt=0, description="RUNNING longer than this is stuck.")
    cleanup_schedule: str = Field("43 3 * * 0", description="Cron for cleanup-runs (weekly).")
    cleanup_older_than_days: float = Field(90, gt=0, description="Finished runs older than this are deleted.")
    cleanup_execute: bool = Field(False, description="Delete for real; otherwise the CronJob only reports (dry run).")
    gc_schedule: str = Field("13 5 * * 0", description="Cron for gc (weekly, after cleanup).")
    gc_older_than: str = Field("30d", pattern=r"^(\d+[dhms])+$", description="Purge runs deleted this long ago.")

    @field_validator("reap_schedule", "cleanup_schedule", "gc_schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        from croniter import croniter

        # Kubernetes takes the five standard fields or a macro such as @hourly (no seconds field).
        if not croniter.is_valid(value) or not (value.startswith("@") or len(value.split()) == 5):
            raise ValueError(f"{value!r} is not a cron schedule Kubernetes accepts (e.g. '17 * * * *' or '@hourly')")
        return value


_USERNAME = r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$"


class TeamConfig(_Section):
    """One team: its own MLflow workspace, who administers it, who works in it, who may read it."""

    name: str = Field(..., description="Team name; also its workspace unless `workspace` is set.")
    workspace: str | None = Field(None, description="MLflow workspace of the team (default: the name).")
    admins: tuple[str, ...] = Field((), description="Usernames that manage everything in the workspace.")
    members: tuple[str, ...] = Field((), description="Usernames that read and edit the workspace's resources.")
    readers: tuple[str, ...] = Field(
        (), description="Teams whose users may read (never change) this team's experiments, models and prompts."
    )
    experiment_prefix: str | None = Field(
        None, pattern=r"^/[a-z0-9][a-z0-9-]*$", description="Experiment-name prefix, the guide's `/{team}`."
    )

    @field_validator("name", "workspace")
    @classmethod
    def _mlflow_workspace_name(cls, value: str | None) -> str | None:
        """MLflow's own workspace-name rule (Kubernetes-style), so the config never holds a name it refuses."""
        if value is None:
            return value
        from mlflow.exceptions import MlflowException
        from mlflow.store.workspace.abstract_store import WorkspaceNameValidator

        try:
            WorkspaceNameValidator.validate(value)
        except MlflowException as exc:
            raise ValueError(exc.message) from None
        if value == "default":
            raise ValueError("'default' is MLflow's default workspace, shared by everyone; name the team")
        return value

    @field_validator("admins", "members")
    @classmethod
    def _usernames(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for username in value:
            if not re.match(_USERNAME, username):
                raise ValueError(f"{username!r} is not a username: letters, digits and . _ @ + - (at most 64)")
        return value

    @property
    def workspace_name(self) -> str:
        return self.workspace or self.name

    @property
    def prefix(self) -> str:
        return self.experiment_prefix or f"/{self.name}"

    @property
    def users(self) -> tuple[str, ...]:
        return (*self.admins, *self.members)


class TeamGroup(_Section):
    """One IdP group -> a role in one team's workspace."""

    group: str = Field(..., min_length=1, description="Group name as the IdP sends it in the groups claim.")
    team: str = Field(..., description="A team declared under `teams`.")
    role: Literal["admin", "member"] = Field(
        "member", description="`admin` manages the workspace, `member` works in it."
    )


class SsoConfig(_Section):
    """Single sign-on for people: the ALB's authenticate-oidc action in front of the UI; the server
    verifies the ALB's signed identity header. Machines keep basic-auth users."""

    issuer: str = Field(..., pattern=r"^https://", description="OIDC issuer URL (its discovery document is checked).")
    authorization_endpoint: str | None = Field(None, pattern=r"^https://", description="IdP authorization endpoint.")
    token_endpoint: str | None = Field(None, pattern=r"^https://", description="IdP token endpoint.")
    user_info_endpoint: str | None = Field(None, pattern=r"^https://", description="IdP user-info endpoint.")
    client_id: str = Field(..., min_length=1, description="OIDC client id (the secret is `ssoClientSecret`).")
    scopes: tuple[str, ...] = Field(("openid", "email", "profile"), description="Scopes the ALB requests.")
    session_timeout_seconds: int = Field(
        28800, ge=60, le=604800, description="ALB session cookie lifetime (at most 7 days)."
    )
    username_claim: Literal["email", "preferred_username", "upn", "sub"] = Field(
        "email", description="Claim that becomes the MLflow username."
    )
    groups_claim: str = Field("groups", min_length=1, description="Claim listing the user's groups.")
    admin_groups: tuple[str, ...] = Field((), description="Groups whose members are MLflow admins.")
    team_groups: tuple[TeamGroup, ...] = Field((), description="Groups whose members get a role in a team.")
    logout_url: str | None = Field(
        None, pattern=r"^https://", description="IdP end-session URL `/platform/logout` redirects to."
    )

    @field_validator("scopes")
    @classmethod
    def _openid(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "openid" not in value:
            raise ValueError("must include 'openid' (the ALB's authenticate-oidc action is OpenID Connect)")
        return value


def team_problems(teams: tuple[TeamConfig, ...], admin_username: str) -> list[tuple[str, str]]:
    """Mistakes across teams, each naming its key: duplicates, a user in two teams, an unknown reader."""
    problems: list[tuple[str, str]] = []
    names = [t.name for t in teams]
    owner: dict[str, str] = {}
    workspaces: dict[str, str] = {}
    for i, team in enumerate(teams):
        key = f"teams[{i}]"
        if names.count(team.name) > 1:
            problems.append((f"{key}.name", f"team {team.name!r} is declared twice; merge the two entries"))
        if team.workspace_name in workspaces and workspaces[team.workspace_name] != team.name:
            other = workspaces[team.workspace_name]
            problems.append((f"{key}.workspace", f"workspace {team.workspace_name!r} is already team {other!r}'s"))
        workspaces.setdefault(team.workspace_name, team.name)
        for field, usernames in (("admins", team.admins), ("members", team.members)):
            for username in usernames:
                if username == admin_username:
                    problems.append(
                        (f"{key}.{field}", f"{username!r} is the server's admin (server.adminUsername); remove it")
                    )
                elif username in owner and owner[username] != team.name:
                    problems.append(
                        (
                            f"{key}.{field}",
                            f"{username!r} is already in team {owner[username]!r}: a user belongs to one team; "
                            f"to let it read {team.name!r}, add {owner[username]!r} to teams[{i}].readers",
                        )
                    )
                elif username in owner:
                    problems.append((f"{key}.{field}", f"{username!r} is listed twice in team {team.name!r}"))
                owner.setdefault(username, team.name)
        for reader in team.readers:
            if reader not in names:
                problems.append((f"{key}.readers", f"unknown team {reader!r}; declared teams: {', '.join(names)}"))
            elif reader == team.name:
                problems.append((f"{key}.readers", f"{team.name!r} need not grant itself read access; remove it"))
    return problems


class StackConfig(BaseModel):
    """One environment: everything ``pulumi up`` and ``mlflow-platform local up`` need to know."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    environment: str = Field(..., pattern=r"^[a-z][a-z0-9-]{1,20}$")
    server: ServerConfig = ServerConfig()
    database: DatabaseConfig = DatabaseConfig()
    artifacts: ArtifactStoreConfig
    load_balancer: LoadBalancerConfig = LoadBalancerConfig()
    network: NetworkConfig = NetworkConfig()
    cluster: ClusterConfig | None = None
    image: ImageConfig = ImageConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    github: GithubConfig = GithubConfig()
    runbooks: RunbooksConfig = RunbooksConfig()
    tracing: TracingConfig = TracingConfig()
    teams: tuple[TeamConfig, ...] = Field(
        (), description="Teams sharing the server, each in its own workspace (turns workspaces on)."
    )
    sso: SsoConfig | None = Field(None, description="Single sign-on for people through the ALB (browser paths).")
    admin_password: SecretStr | None = Field(
        None, description="Bootstrap admin password (secret); generated when absent."
    )
    sso_client_secret: SecretStr | None = Field(None, description="OIDC client secret of `sso` (secret).")

    @property
    def engines_per_process(self) -> int:
        return ENGINES_WITH_AUTH if self.server.basic_auth else ENGINES_WITHOUT_AUTH

    @property
    def namespace(self) -> str:
        """The Kubernetes namespace: the cluster section's, or the default when it has none."""
        return self.cluster.namespace if self.cluster else ClusterConfig.model_fields["namespace"].default

    @property
    def connection_budget(self) -> int:
        """Connections the server fleet may open at its peak."""
        s, d = self.server, self.database
        per_process = self.engines_per_process * (d.pool_size + d.max_overflow)
        processes = s.replica_ceiling * (s.workers + PARENT_PROCESSES_PER_REPLICA)
        if s.job_execution:  # one more replica, which also runs the job runner and periodic tasks
            processes += s.workers + PARENT_PROCESSES_PER_REPLICA + JOB_PROCESSES
        return processes * per_process

    @model_validator(mode="after")
    def _cross_field(self) -> StackConfig:
        problems = self.cross_field_problems()
        if problems:
            raise _CrossFieldError(problems)
        return self

    def deployment_problems(self) -> list[tuple[str, str]]:
        """What `pulumi up` needs beyond a valid config (the local platform needs none of it)."""
        lb = self.load_balancer
        problems: list[tuple[str, str]] = []
        if self.cluster is None:
            problems.append(("cluster", "is required to deploy: set cluster.name or cluster.create: true"))
        elif self.cluster.create and self.cluster.public_access_cidrs is None:
            problems.append(
                (
                    "cluster.publicAccessCidrs",
                    "is required with cluster.create: the CIDRs of your CI runners and admins "
                    "(or [] for a private endpoint only)",
                )
            )
        if not lb.hostname:
            problems.append(("loadBalancer.hostname", "is required to deploy: the public DNS name for TLS"))
        if self.server.webhook_local_targets:
            problems.append(
                (
                    "server.webhookLocalTargets",
                    "turns off MLflow's SSRF protection for webhooks; remove it (it is for the local platform)",
                )
            )
        if not lb.certificate_arn and not lb.route53_zone_id:
            problems.append(
                (
                    "loadBalancer.certificateArn",
                    "no certificate source: set loadBalancer.certificateArn (existing ACM certificate) "
                    "or loadBalancer.route53ZoneId (a DNS-validated certificate is created)",
                )
            )
        if self.sso is not None:
            problems += _sso_deployment_problems(self.sso, self.sso_client_secret)
        return problems

    def _sso_problems(self) -> list[tuple[str, str]]:
        if self.sso is None:
            return []
        problems: list[tuple[str, str]] = []
        if not self.server.basic_auth:
            problems.append(("sso", "needs server.basicAuth: true (machines sign in with basic-auth users)"))
        teams = {t.name for t in self.teams}
        for i, mapping in enumerate(self.sso.team_groups):
            if mapping.team not in teams:
                known = ", ".join(sorted(teams)) or "none declared"
                problems.append((f"sso.teamGroups[{i}].team", f"unknown team {mapping.team!r} (teams: {known})"))
        return problems

    def _replica_problems(self) -> list[tuple[str, str]]:
        if self.database.read_replica is None or self.server.basic_auth:
            return []
        return [
            (
                "database.readReplica",
                "needs server.basicAuth: true: the replica is read through the platform's app "
                "(replica_reads.py), which only that setting serves",
            )
        ]

    def _budget_problems(self) -> list[tuple[str, str]]:
        """The connection budget must fit the database's max_connections less the reserve."""
        s, d = self.server, self.database
        problems: list[tuple[str, str]] = []
        max_conn = d.effective_max_connections
        if max_conn is None:
            problems.append(
                (
                    "database.maxConnections",
                    f"instance class {d.instance_class!r} has no known memory size; "
                    "set database.maxConnections explicitly",
                )
            )
        else:
            available = max_conn - d.reserved_connections
            if self.connection_budget > available:
                problems.append(
                    (
                        "database.poolSize",
                        f"connection budget {s.replica_ceiling} replicas x ({s.workers} workers + "
                        f"{PARENT_PROCESSES_PER_REPLICA} parent) x {self.engines_per_process} engines x "
                        f"({d.pool_size} pool + {d.max_overflow} overflow)"
                        + (" + the job-runner replica" if s.job_execution else "")
                        + f" = {self.connection_budget} exceeds max_connections {max_conn} - "
                        f"{d.reserved_connections} reserved = {available}; lower database.poolSize/"
                        "maxOverflow or server.workers/maxReplicas, or use a larger database.instanceClass",
                    )
                )
        return problems

    @property
    def workspaces(self) -> bool:
        """MLflow's multi-workspace mode: on wherever teams are declared."""
        return bool(self.teams)

    @property
    def default_permission(self) -> str:
        """server.defaultPermission if set; else nothing for a user outside its grants where teams
        are declared, and READ (MLflow's own default) where they are not."""
        explicit = self.server.default_permission
        return explicit or ("NO_PERMISSIONS" if self.teams else "READ")

    def cross_field_problems(self) -> list[tuple[str, str]]:
        s, d, lb = self.server, self.database, self.load_balancer
        problems = self._budget_problems() + team_problems(self.teams, s.admin_username) + self._sso_problems()
        problems += self._replica_problems()
        if s.keep_alive_seconds <= lb.idle_timeout_seconds:
            problems.append(
                (
                    "server.keepAliveSeconds",
                    f"{s.keep_alive_seconds}s must exceed loadBalancer.idleTimeoutSeconds "
                    f"({lb.idle_timeout_seconds}s), or the load balancer reuses connections the server "
                    f"already closed (502s); set it to at least {lb.idle_timeout_seconds + 5}",
                )
            )
        if self.tracing.archive_after and not s.job_execution:
            problems.append(
                (
                    "tracing.archiveAfter",
                    "trace archival runs in MLflow's job runner: set server.jobExecution: true (one extra "
                    "replica runs it), or remove tracing.archiveAfter",
                )
            )
        if d.pool_size + d.max_overflow < s.threads:
            problems.append(
                (
                    "database.maxOverflow",
                    f"poolSize + maxOverflow ({d.pool_size} + {d.max_overflow}) is below server.threads "
                    f"({s.threads}): threads would queue for a connection and time out under load; "
                    f"raise database.maxOverflow to at least {s.threads - d.pool_size}",
                )
            )
        if s.worker_class == "sync" and s.threads != 1:
            problems.append(
                (
                    "server.threads",
                    "threads only apply to workerClass gthread; set threads: 1 or use gthread",
                )
            )
        if self.admin_password is not None and len(self.admin_password.get_secret_value()) < 12:
            problems.append(
                (
                    "adminPassword",
                    "must be at least 12 characters (MLflow refuses shorter admin passwords); "
                    f"set a longer one with `pulumi config set --secret {PROJECT}:adminPassword`",
                )
            )
        if lb.hostname and lb.hostname not in s.allowed_hosts:
            problems.append(
                (
                    "server.allowedHosts",
                    f"must include loadBalancer.hostname {lb.hostname!r}, or the server answers 403 to "
                    "every request arriving through the load balancer",
                )
            )
        return problems


def _sso_deployment_problems(sso: SsoConfig, client_secret: SecretStr | None) -> list[tuple[str, str]]:
    """The ALB's authenticate-oidc action takes the endpoints and the secret explicitly."""
    problems = [
        (f"sso.{to_camel(name)}", f"is required to deploy: copy it from {sso.issuer}/.well-known/openid-configuration")
        for name in ("authorization_endpoint", "token_endpoint", "user_info_endpoint")
        if getattr(sso, name) is None
    ]
    if client_secret is None:
        problems.append(
            ("ssoClientSecret", f"is required to deploy: `pulumi config set --secret {PROJECT}:ssoClientSecret`")
        )
    return problems


class _CrossFieldError(ValueError):
    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{k}: {m}" for k, m in problems))


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in getattr(annotation, "__args__", ())


#: Stack-file keys (without the ``mlflow-platform:`` namespace) -> StackConfig fields, from the model.
SECRET_KEYS = {to_camel(n): n for n, f in StackConfig.model_fields.items() if _is_secret(f.annotation)}
_SECTIONS = {to_camel(n): n for n in StackConfig.model_fields if n not in SECRET_KEYS.values()}


def section_models() -> dict[str, type[_Section]]:
    """The stack file's sections (camelCase key -> model), in the model's order."""
    models = {}
    for name, field in StackConfig.model_fields.items():
        annotation = field.annotation
        candidates = (annotation, *getattr(annotation, "__args__", ()))
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, _Section)), None)
        if model is not None:
            models[to_camel(name)] = model
    return models


@dataclass(frozen=True)
class LoadedStack:
    """A parsed stack file: the validated config plus what Pulumi needs beside it."""

    config: StackConfig
    provider_config: dict[str, Any]
    #: stack-file keys held encrypted (``secure:``); their values are unknown offline.
    encrypted_keys: frozenset[str]

    @property
    def account_ids(self) -> tuple[str, ...]:
        """``aws:allowedAccountIds``: the AWS provider refuses to act in any other account."""
        value = self.provider_config.get("aws:allowedAccountIds") or ()
        return tuple(str(v) for v in (value if isinstance(value, list) else [value]))

    def missing_secrets(self) -> list[str]:
        """Secrets a deployment needs that the file holds neither encrypted nor given."""
        c = self.config
        needs_sso = c.sso is not None and c.sso_client_secret is None
        return ["ssoClientSecret"] if needs_sso and "ssoClientSecret" not in self.encrypted_keys else []

    def deployment_problems(self) -> list[tuple[str, str]]:
        """What `pulumi up` would refuse, as far as the file shows (an encrypted secret counts as set)."""
        problems = [
            (key, message)
            for key, message in self.config.deployment_problems()
            if key not in self.encrypted_keys  # its value is only unknown offline
        ]
        if not self.account_ids:
            problems.append(
                (
                    "aws:allowedAccountIds",
                    "is required to deploy: the one AWS account of this environment, e.g. "
                    '`aws:allowedAccountIds: ["111111111111"]` (docs/decisions/0008)',
                )
            )
        return problems


def from_config_values(
    values: Mapping[str, Any],
    *,
    source: str,
    secret_keys: Iterable[str] = (),
    secrets: Mapping[str, str] | None = None,
) -> StackConfig:
    """Validate ``mlflow-platform:*`` values as Pulumi hands them over (or a stack file holds them).

    ``secret_keys`` are the keys Pulumi holds as secrets; a secret-only key outside that set is
    refused because it sits in plain text in the stack file. ``secrets`` supplies decrypted values.
    """
    secret_keys = set(secret_keys)
    problems: list[tuple[str, str]] = []
    data: dict[str, Any] = {}
    for key, value in values.items():
        name = key.split(":", 1)[1] if key.startswith(f"{PROJECT}:") else key
        if name in SECRET_KEYS:
            if name not in secret_keys and key not in secret_keys:
                problems.append(
                    (
                        name,
                        "is stored in plain text; remove it from the stack file and run "
                        f"`pulumi config set --secret {PROJECT}:{name} <value>`",
                    )
                )
            elif isinstance(value, str):
                data[SECRET_KEYS[name]] = value
            continue
        if name not in _SECTIONS:
            import difflib

            close = difflib.get_close_matches(name, [*_SECTIONS, *SECRET_KEYS], n=1, cutoff=0.6)
            hint = (
                f"did you mean `{close[0]}`?"
                if close
                else "known keys are " + ", ".join(sorted(_SECTIONS) + sorted(SECRET_KEYS))
            )
            problems.append((name, f"unknown key; {hint}"))
            continue
        data[_SECTIONS[name]] = value
    for name, value in (secrets or {}).items():
        if name not in SECRET_KEYS:
            raise KeyError(f"unknown secret {name!r}")
        data[SECRET_KEYS[name]] = value
    if "environment" not in data:
        problems.append(("environment", f"is required; add `{PROJECT}:environment: <name>`"))
    if "artifacts" not in data:
        problems.append(("artifacts.prefix", f"is required; add `{PROJECT}:artifacts: {{prefix: <env>}}`"))
    if problems:
        raise ConfigError(source, problems)
    try:
        return StackConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _describe(exc)) from None


def _suggest(loc: list[str]) -> str:
    """'did you mean `replicas`?' for a misspelt key, from the section's own fields."""
    import difflib

    model = section_models().get(loc[0]) if len(loc) == 2 else None
    known = [to_camel(name) for name in model.model_fields] if model else []
    close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
    if close:
        return f"did you mean `{close[0]}`?"
    return "check its spelling against docs/configuration.md"


def _describe(exc: ValidationError) -> list[tuple[str, str]]:
    reverse = {v: k for k, v in {**_SECTIONS, **SECRET_KEYS}.items()}
    problems: list[tuple[str, str]] = []
    for error in exc.errors():
        ctx_error = (error.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _CrossFieldError):
            problems.extend(ctx_error.problems)
            continue
        loc = [str(part) for part in error["loc"]]
        if loc:
            loc[0] = reverse.get(loc[0], loc[0])
        key = ".".join(to_camel(part) if i else part for i, part in enumerate(loc)) or "(stack)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key; " + _suggest(loc)
        elif error["type"] == "missing":
            message = "is required"
        elif "input" in error and error["type"] not in ("value_error",) and not isinstance(error["input"], dict):
            message = f"{message} (got {error['input']!r})"
        problems.append((key, message))
    return problems


def load_stack_file(path: str | Path, *, secrets: Mapping[str, str] | None = None) -> LoadedStack:
    """Parse a Pulumi stack file offline. ``secure:`` values stay unknown unless ``secrets`` has them."""
    path = Path(path)
    source = str(path)
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(source, [("(file)", "does not exist")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, [("(file)", f"is not valid YAML: {exc}")]) from None
    config_block = document.get("config") or {}
    if not isinstance(config_block, dict):
        raise ConfigError(source, [("config", "must be a mapping of keys to values")])
    ours: dict[str, Any] = {}
    provider: dict[str, Any] = {}
    encrypted: set[str] = set()
    for key, value in config_block.items():
        if not key.startswith(f"{PROJECT}:"):
            provider[key] = value
            continue
        name = key.split(":", 1)[1]
        if isinstance(value, dict) and set(value) == {"secure"}:
            encrypted.add(name)
            continue  # ciphertext: only the Pulumi CLI can decrypt it
        ours[key] = value
    for name in encrypted:
        if name not in SECRET_KEYS:
            raise ConfigError(
                source, [(name, f"only {' and '.join(sorted(SECRET_KEYS))} may be secrets in this project")]
            )
    config = from_config_values(ours, source=source, secret_keys=encrypted, secrets=secrets)
    return LoadedStack(config=config, provider_config=provider, encrypted_keys=frozenset(encrypted))


def shared_accounts(path: Path, loaded: LoadedStack) -> list[tuple[str, str]]:
    """Each environment in its own AWS account (docs/decisions/0008): a deploy role can reach
    everything in its account, so dev's must never share one with prod."""
    problems = []
    for other in sorted(path.parent.glob("Pulumi.*.yaml")):
        if other.resolve() == path.resolve():
            continue
        try:
            theirs = load_stack_file(other)
        except ConfigError:
            continue  # that file's own check reports it
        shared = sorted(set(loaded.account_ids) & set(theirs.account_ids))
        if shared:
            problems.append(
                (
                    "aws:allowedAccountIds",
                    f"{', '.join(shared)} is also {theirs.config.environment}'s account ({other.name}); "
                    "give each environment its own AWS account",
                )
            )
    return problems
