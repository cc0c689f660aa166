"""The one source of truth for how the tracking server runs.

``render_server`` turns a stack config plus the endpoints of one place (RDS + S3 in AWS, embedded
PostgreSQL + SeaweedFS on a laptop) into the server's argv, environment and basic-auth ini.
The Kubernetes Deployment and the local platform both execute its output, so what the tests run
is what production runs. It is pure: no I/O, no secrets — secret values are only referenced.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from .config import StackConfig
from .history_pages import PAGE_SIZE_ENV as METRIC_HISTORY_PAGE_SIZE_ENV
from .observability import WORKER_THREADS_ENV
from .permission_cache import TTL_ENV as PERMISSION_CACHE_TTL_ENV
from .replica_reads import CONNECT_TIMEOUT_SECONDS as REPLICA_CONNECT_TIMEOUT_SECONDS
from .replica_reads import KEEPALIVES as REPLICA_KEEPALIVES
from .replica_reads import READ_REPLICA_URI_ENV
from .sso import SETTINGS_ENV as SSO_SETTINGS_ENV
from .sso import SsoSettings, TeamRole

SERVER_SECRET = "mlflow-server"
BASIC_AUTHORIZATION = "mlflow.server.auth:authenticate_request_basic_auth"
#: Basic auth for machines, the ALB's verified identity header for people (``sso``).
SSO_AUTHORIZATION = "mlflow_platform.sso:authenticate"
#: The ``mlflow.app`` entry point of mlflow_platform.server_app: basic auth on Flask and FastAPI routes.
AUTH_APP = "platform-auth"


@dataclass(frozen=True)
class SecretRef:
    """A value the runtime injects: a Kubernetes Secret key in AWS, the state dir's secrets locally."""

    secret: str
    key: str


#: The server's least-privilege database role (DML only; created by the migration step).
DB_PASSWORD = SecretRef(SERVER_SECRET, "db-password")
#: The schema owner (the RDS master user). Only the migration step sees it, never a server pod.
DB_OWNER_SECRET = "mlflow-db-owner"
DB_OWNER_PASSWORD = SecretRef(DB_OWNER_SECRET, "password")
#: AWS's global RDS CA bundle, baked into the image (server/Dockerfile) for sslmode=verify-full.
RDS_CA_BUNDLE = "/etc/ssl/certs/rds-global-bundle.pem"
#: Where the migration step reads the application role's password.
APP_DB_PASSWORD_ENV = "MLFLOW_PLATFORM_APP_DB_PASSWORD"
FLASK_SECRET_KEY = SecretRef(SERVER_SECRET, "flask-secret-key")
ADMIN_PASSWORD = SecretRef(SERVER_SECRET, "admin-password")


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str | None = None
    secret: SecretRef | None = None

    def __post_init__(self) -> None:
        if (self.value is None) == (self.secret is None):
            raise ValueError(f"{self.name}: exactly one of value or secret must be set")


@dataclass(frozen=True)
class Endpoints:
    """What differs between a laptop and AWS: where the database, the bucket and the clients are."""

    db_host: str
    bucket: str
    db_port: int = 5432
    #: ``verify-full`` against RDS: TLS (rds.force_ssl=1) *and* the server's certificate checked
    #: against the RDS CA for the endpoint's name; ``require`` alone accepts any certificate.
    #: The embedded PostgreSQL has no TLS.
    db_sslmode: str = "verify-full"
    db_sslrootcert: str | None = RDS_CA_BUNDLE
    #: The read replica's endpoint (``database.readReplica``): same roles and TLS as the primary.
    db_replica_host: str | None = None
    db_replica_port: int = 5432
    bind_host: str = "0.0.0.0"
    port_override: int | None = None
    s3_endpoint_url: str | None = None
    auth_config_path: str = "/etc/mlflow/auth/basic_auth.ini"
    trace_archival_config_path: str = "/etc/mlflow/auth/trace_archival.yaml"
    #: Host headers accepted besides the configured public hostnames (e.g. ``localhost`` locally).
    extra_allowed_hosts: tuple[str, ...] = ()
    #: prometheus_client's multiprocess directory, shared by gunicorn's workers (an emptyDir in a pod).
    metrics_dir: str = "/tmp/mlflow-metrics"
    sso_config_path: str = "/etc/mlflow/auth/sso.json"
    #: With ``sso``: the ALB that signs identity headers, where its region publishes the keys, and
    #: the only peers (the ALB's subnets) whose identity headers are accepted.
    sso_signer: str | None = None
    sso_key_endpoint: str | None = None
    sso_trusted_proxies: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServerSpec:
    argv: tuple[str, ...]
    env: tuple[EnvVar, ...]
    auth_ini: str | None
    auth_config_path: str | None
    port: int
    #: Further configuration files the server reads: path -> content.
    extra_files: tuple[tuple[str, str], ...] = ()

    @property
    def files(self) -> dict[str, str]:
        """Every file the server reads besides its code (the runtime writes or mounts them)."""
        found = dict(self.extra_files)
        if self.auth_ini is not None and self.auth_config_path is not None:
            found[self.auth_config_path] = self.auth_ini
        return found

    @property
    def secret_refs(self) -> tuple[SecretRef, ...]:
        return tuple(e.secret for e in self.env if e.secret is not None)

    def resolve_env(self, secrets: Mapping[SecretRef, str]) -> dict[str, str]:
        """Environment with secret references filled in (the local platform's job)."""
        missing = [ref for ref in self.secret_refs if ref not in secrets]
        if missing:
            raise KeyError(f"no value for secret(s): {', '.join(f'{r.secret}/{r.key}' for r in missing)}")
        return {e.name: e.value if e.secret is None else secrets[e.secret] for e in self.env}


def database_url(
    config: StackConfig, endpoints: Endpoints, database: str, *, owner: bool = False, replica: bool = False
) -> str:
    """SQLAlchemy URL without a password: libpq reads it from PGPASSWORD, so the URL is not secret.

    Servers and runbooks connect as the application role; ``owner`` is for the migration step.
    ``replica``: the read replica (a physical copy: same roles, same password), with a short
    connect timeout so that a dead replica is noticed in seconds (``replica_reads``).
    """
    d = config.database
    role = d.username if owner else d.app_username
    query = f"sslmode={endpoints.db_sslmode}"
    if endpoints.db_sslrootcert:
        query += f"&sslrootcert={endpoints.db_sslrootcert}"
    host, port = endpoints.db_host, endpoints.db_port
    if replica:
        if endpoints.db_replica_host is None:
            raise ValueError("database.readReplica is set but these endpoints have no replica host")
        host, port = endpoints.db_replica_host, endpoints.db_replica_port
        # a replica that went away (not one that refuses) is noticed by TCP within seconds too
        query += f"&connect_timeout={REPLICA_CONNECT_TIMEOUT_SECONDS}{REPLICA_KEEPALIVES}"
    return f"postgresql+psycopg://{role}@{host}:{port}/{database}?{query}"


GUNICORN_HOOKS = "mlflow_platform.gunicorn_hooks"


def gunicorn_options(config: StackConfig) -> str:
    s = config.server
    opts = [
        f"--worker-class={s.worker_class}",
        f"--timeout={s.timeout_seconds}",
        f"--graceful-timeout={s.graceful_timeout_seconds}",
        f"--keep-alive={s.keep_alive_seconds}",
        f"--max-requests={s.max_requests}",
        f"--max-requests-jitter={s.max_requests_jitter}",
        "--access-logfile=-",
        "--error-logfile=-",
        # gunicorn's control socket defaults to $HOME/.gunicorn/gunicorn.ctl, shared by every server
        # of the same user (and unwritable on a read-only root filesystem); nothing here uses it.
        "--no-control-socket",
        # No request header may set SCRIPT_NAME or PATH_INFO (gunicorn takes them from loopback peers by
        # default): MLflow's halves would route and authorize different paths. The edge refuses them too.
        "--forwarder-headers=",
    ]
    if s.worker_class == "gthread":
        opts.insert(1, f"--threads={s.threads}")
    if s.prometheus:  # a recycled worker's live gauges must stop counting (gunicorn_hooks.py)
        opts.append(f"--config=python:{GUNICORN_HOOKS}")
    return shlex.join(opts)


def allowed_hosts(config: StackConfig, endpoints: Endpoints) -> list[str]:
    """Exact hosts plus ``host:*``: a Host header carrying a port is otherwise refused with 403."""
    hosts: list[str] = []
    for host in (*config.server.allowed_hosts, *endpoints.extra_allowed_hosts):
        for entry in (host, f"{host}:*"):
            if entry not in hosts:
                hosts.append(entry)
    return hosts


def render_auth_ini(config: StackConfig, endpoints: Endpoints) -> str:
    """basic-auth settings; the admin password comes from MLFLOW_AUTH_ADMIN_PASSWORD, not this file."""
    s = config.server
    lines = [
        "[mlflow]",
        f"default_permission = {config.default_permission}",
        f"database_uri = {database_url(config, endpoints, config.database.auth_database)}",
        f"admin_username = {s.admin_username}",
        f"authorization_function = {SSO_AUTHORIZATION if config.sso else BASIC_AUTHORIZATION}",
        f"auth_cache_ttl_seconds = {s.auth_cache_ttl_seconds}",
        "auth_cache_max_size = 10000",
    ]
    return "\n".join(lines) + "\n"


def render_sso(config: StackConfig, endpoints: Endpoints) -> SsoSettings:
    """The server's SSO settings: who signs, where the keys are, and groups -> admin and team roles
    (a team's group also gets the reader role in every team that lists it under ``readers``)."""
    from .teams import ADMIN_ROLE, MEMBER_ROLE, READER_ROLE

    sso = config.sso
    assert sso is not None and endpoints.sso_signer and endpoints.sso_key_endpoint
    teams = {t.name: t for t in config.teams}
    roles: list[TeamRole] = []
    for mapping in sso.team_groups:
        role = ADMIN_ROLE if mapping.role == "admin" else MEMBER_ROLE
        roles.append(TeamRole(mapping.group, teams[mapping.team].workspace_name, role))
        roles += [
            TeamRole(mapping.group, other.workspace_name, READER_ROLE)
            for other in config.teams
            if mapping.team in other.readers
        ]
    return SsoSettings(
        signer=endpoints.sso_signer,
        key_endpoint=endpoints.sso_key_endpoint,
        trusted_proxies=endpoints.sso_trusted_proxies,
        issuer=sso.issuer,
        client_id=sso.client_id,
        username_claim=sso.username_claim,
        groups_claim=sso.groups_claim,
        admin_groups=sso.admin_groups,
        team_roles=tuple(dict.fromkeys(roles)),
        logout_url=sso.logout_url,
        cache_seconds=config.server.auth_cache_ttl_seconds,
    )


def _bool(value: bool) -> str:
    return "true" if value else "false"


def server_env(config: StackConfig, endpoints: Endpoints, primary: bool) -> list[EnvVar]:
    """The server's environment, auth aside: pools, host checks, job runner, webhooks, S3 endpoint,
    read replica."""
    s, d = config.server, config.database
    env: list[EnvVar] = [
        EnvVar("PGPASSWORD", secret=DB_PASSWORD),
        EnvVar("MLFLOW_SQLALCHEMYSTORE_POOL_SIZE", str(d.pool_size)),
        EnvVar("MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW", str(d.max_overflow)),
        EnvVar("MLFLOW_SQLALCHEMYSTORE_POOL_RECYCLE", str(d.pool_recycle_seconds)),
        # With gunicorn the Flask app reads host/CORS checks from the environment only.
        EnvVar("MLFLOW_SERVER_ALLOWED_HOSTS", ",".join(allowed_hosts(config, endpoints))),
        EnvVar("MLFLOW_FLASK_SERVER_SECRET_KEY", secret=FLASK_SECRET_KEY),
        EnvVar("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", _bool(s.job_execution and primary)),
        EnvVar("MLFLOW_SERVER_JOB_ENABLE_PERIODIC_TASKS", _bool(s.job_execution and primary)),
        EnvVar("PYTHONUNBUFFERED", "1"),
        # MLflow forwards server and UI usage data to its own service unless told not to.
        EnvVar("MLFLOW_DISABLE_TELEMETRY", _bool(not s.telemetry)),
    ]
    if s.webhook_local_targets:
        env += [
            EnvVar("MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS", "true"),
            EnvVar("MLFLOW_WEBHOOK_ALLOWED_SCHEMES", "http,https"),
        ]
    if s.cors_allowed_origins:
        env.append(EnvVar("MLFLOW_SERVER_CORS_ALLOWED_ORIGINS", ",".join(s.cors_allowed_origins)))
    if endpoints.s3_endpoint_url:
        env.append(EnvVar("MLFLOW_S3_ENDPOINT_URL", endpoints.s3_endpoint_url))
    if d.read_replica is not None:  # searches and pages (replica_reads.py); auth and workspaces: the primary
        env.append(EnvVar(READ_REPLICA_URI_ENV, database_url(config, endpoints, d.tracking_database, replica=True)))
    return env


def render_server(config: StackConfig, endpoints: Endpoints, *, primary: bool = True) -> ServerSpec:
    """Render the tracking server for one replica.

    Exactly one replica is ``primary``: only it runs MLflow's job runner and periodic tasks (when
    ``server.jobExecution`` is on), so scheduled work never runs twice.
    """
    s, d = config.server, config.database
    port = endpoints.port_override or s.port
    argv = [
        "mlflow",
        "server",
        "--backend-store-uri",
        database_url(config, endpoints, d.tracking_database),
        "--serve-artifacts",
        "--artifacts-destination",
        f"s3://{endpoints.bucket}/{config.artifacts.prefix}",
        "--host",
        endpoints.bind_host,
        "--port",
        str(port),
        "--workers",
        str(s.workers),
        "--gunicorn-opts",
        gunicorn_options(config),
    ]
    if s.basic_auth:
        argv += ["--app-name", AUTH_APP]
    if s.prometheus:
        argv += ["--expose-prometheus", endpoints.metrics_dir]
    if config.workspaces:  # one workspace per declared team
        argv += ["--enable-workspaces"]

    env = server_env(config, endpoints, primary)
    if s.prometheus:  # the edge's saturation gauge: how many requests one worker serves at once
        env.append(EnvVar(WORKER_THREADS_ENV, str(s.threads if s.worker_class == "gthread" else 1)))
    auth_ini = auth_path = None
    if s.basic_auth:
        auth_ini = render_auth_ini(config, endpoints)
        auth_path = endpoints.auth_config_path
        env += [
            EnvVar("MLFLOW_AUTH_CONFIG_PATH", auth_path),
            EnvVar("MLFLOW_AUTH_ADMIN_PASSWORD", secret=ADMIN_PASSWORD),
            EnvVar(PERMISSION_CACHE_TTL_ENV, str(s.permission_cache_ttl_seconds)),
            EnvVar(METRIC_HISTORY_PAGE_SIZE_ENV, str(s.metric_history_page_size)),
        ]
    extra: list[tuple[str, str]] = []
    if s.basic_auth and config.sso:
        extra.append((endpoints.sso_config_path, render_sso(config, endpoints).to_json()))
        env.append(EnvVar(SSO_SETTINGS_ENV, endpoints.sso_config_path))
    if config.tracing.archive_after:
        extra.append((endpoints.trace_archival_config_path, render_trace_archival(config, endpoints)))
        env.append(EnvVar("MLFLOW_TRACE_ARCHIVAL_CONFIG", endpoints.trace_archival_config_path))
    return ServerSpec(
        argv=tuple(argv),
        env=tuple(env),
        auth_ini=auth_ini,
        auth_config_path=auth_path,
        port=port,
        extra_files=tuple(extra),
    )


def render_trace_archival(config: StackConfig, endpoints: Endpoints) -> str:
    """MLflow's trace archival config (MLFLOW_TRACE_ARCHIVAL_CONFIG): old traces move from the
    database to the artifact bucket; the primary replica's job runner does it."""
    t = config.tracing
    location = f"s3://{endpoints.bucket}/{config.artifacts.prefix}/trace-archive"
    return (
        "trace_archival:\n"
        "  enabled: true\n"
        f"  location: {location}\n"
        f"  retention: {t.archive_after}\n"
        f"  interval_seconds: {t.archive_interval_seconds}\n"
    )


@dataclass(frozen=True)
class ClusterWriters:
    """Who writes to the database in a cluster, so a schema change can stop them first."""

    namespace: str
    deployments: tuple[str, ...]
    cronjobs: tuple[str, ...]
    pod_selectors: tuple[str, ...]
    rds_instance: str

    def argv(self, *, with_pods: bool = True) -> tuple[str, ...]:
        args = ["--namespace", self.namespace]
        args += [a for d in self.deployments for a in ("--deployment", d)]
        args += [a for c in self.cronjobs for a in ("--cronjob", c)]
        if with_pods:
            args += [a for p in self.pod_selectors for a in ("--writer-pods", p)]
            args += ["--rds-instance", self.rds_instance]
        return tuple(args)


#: The migration Job's activeDeadlineSeconds: past it Kubernetes kills the pod and the deploy fails.
MIGRATION_DEADLINE_SECONDS = 3600
#: How long the Job's index builds may take in all (``tuning``): the rest of the deadline is for
#: the snapshot and MLflow's migrations. A build cut short is logged, and `db tune` finishes it.
INDEX_BUILD_BUDGET_SECONDS = 2400


def render_migration(config: StackConfig, endpoints: Endpoints, writers: ClusterWriters | None = None) -> ServerSpec:
    """The pre-rollout schema step, as the schema owner: create the auth database if missing,
    upgrade both schemas (coordinated when the schema changes: ``writers`` stopped and the RDS
    instance snapshotted first), then (re)grant the server's DML-only role."""
    d = config.database
    argv = (
        "mlflow-platform",
        "db",
        "prepare",
        "--backend-store-uri",
        database_url(config, endpoints, d.tracking_database, owner=True),
        "--auth-database",
        d.auth_database,
        "--app-role",
        d.app_username,
        "--index-build-budget",
        str(INDEX_BUILD_BUDGET_SECONDS),
        *(writers.argv() if writers else ()),
    )
    env = (
        EnvVar("PGPASSWORD", secret=DB_OWNER_PASSWORD),
        EnvVar(APP_DB_PASSWORD_ENV, secret=DB_PASSWORD),
        EnvVar("PYTHONUNBUFFERED", "1"),
    )
    return ServerSpec(argv=argv, env=env, auth_ini=None, auth_config_path=None, port=0)


def render_release(writers: ClusterWriters) -> tuple[str, ...]:
    """The post-rollout step: start the writers a coordinated upgrade stopped (nothing otherwise)."""
    return ("mlflow-platform", "db", "resume", *writers.argv(with_pods=False))
