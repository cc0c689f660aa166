"""MLflow-specific guardrails: the things that break a tracking server in production."""

from __future__ import annotations

import configparser

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    StackValidationArgs,
    StackValidationPolicy,
)
from sqlalchemy.engine import make_url

from ..config import (
    ENGINES_WITH_AUTH,
    ENGINES_WITHOUT_AUTH,
    JOB_PROCESSES,
    PARENT_PROCESSES_PER_REPLICA,
    DatabaseConfig,
)
from ..replica_reads import READ_REPLICA_URI_ENV
from ..server_spec import AUTH_APP
from ._helpers import PRODUCTION_SCHEMA, as_list, env_of, gunicorn_option, of_type, option, server_containers
from .rds import is_replica

#: App names that put MLflow's basic auth in front of the server.
AUTH_APPS = ("basic-auth", AUTH_APP)
SECRET_ENV = ("MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_AUTH_ADMIN_PASSWORD", "PGPASSWORD")
# SQLAlchemy's own defaults, which MLflow uses when the variables are unset.
DEFAULT_POOL, DEFAULT_OVERFLOW = 5, 10


def _basic_auth(args: StackValidationArgs, report: ReportViolation) -> None:
    found = False
    for deployment, container in server_containers(args):
        found = True
        if option(as_list(container.get("command")), "--app-name") not in AUTH_APPS:
            report(
                f"{deployment.name} runs mlflow server without basic auth (--app-name {AUTH_APP}): anyone can "
                "read and write",
                deployment.urn,
            )
    if not found:
        report("no tracking server Deployment (mlflow server) found to check")


def _auth_ini(args: StackValidationArgs) -> dict[str, str] | None:
    for config_map in of_type(args, "kubernetes:core/v1:ConfigMap"):
        text = (config_map.props.get("data") or {}).get("basic_auth.ini")
        if text:
            parser = configparser.ConfigParser()
            parser.read_string(text)
            return dict(parser["mlflow"]) if parser.has_section("mlflow") else {}
    return None


def _auth_db_postgres(args: StackValidationArgs, report: ReportViolation) -> None:
    servers = list(server_containers(args))
    if not any(option(as_list(c.get("command")), "--app-name") in AUTH_APPS for _, c in servers):
        return
    ini = _auth_ini(args)
    uri = (ini or {}).get("database_uri", "sqlite:///basic_auth.db (MLflow's default)")
    if not uri.startswith("postgresql"):
        report(f"basic-auth users live in {uri}: per-pod SQLite loses users and disagrees between replicas")


def _secrets_from_secrets(args: StackValidationArgs, report: ReportViolation) -> None:
    for deployment, container in server_containers(args):
        env = env_of(container)
        for name in SECRET_ENV:
            entry = env.get(name)
            if name == "PGPASSWORD" and entry is None:
                continue
            if entry is None:
                report(f"{deployment.name} does not set {name}", deployment.urn)
            elif not ((entry.get("valueFrom") or {}).get("secretKeyRef")):
                report(f"{deployment.name} sets {name} without a secretKeyRef", deployment.urn)


def _db_verified_least_privilege(args: StackValidationArgs, report: ReportViolation) -> None:
    """libpq's ``require`` accepts any certificate; the master user can alter or drop the schema."""
    masters = {
        str(db.props.get("username")) for db in of_type(args, "aws:rds/instance:Instance") if not is_replica(db.props)
    }
    for deployment, container in server_containers(args):
        argv = as_list(container.get("command"))
        replica = (env_of(container).get(READ_REPLICA_URI_ENV) or {}).get("value")
        for flag, raw in (("", option(argv, "--backend-store-uri")), (" replica", replica)):
            if flag and raw is None:
                continue
            uri = make_url(raw or "postgresql://")
            if uri.query.get("sslmode") != "verify-full" or not uri.query.get("sslrootcert"):
                report(
                    f"{deployment.name} does not verify the database{flag} certificate (sslmode=verify-full)",
                    deployment.urn,
                )
            if uri.username in masters:
                report(f"{deployment.name} connects to the database{flag} as the RDS master user", deployment.urn)


def _keep_alive(args: StackValidationArgs, report: ReportViolation) -> None:
    timeouts = [int(alb.props.get("idleTimeout") or 60) for alb in of_type(args, "aws:lb/loadBalancer:LoadBalancer")]
    if not timeouts:
        return
    idle = max(timeouts)
    for deployment, container in server_containers(args):
        argv = as_list(container.get("command"))
        keep_alive = gunicorn_option(argv, "--keep-alive")
        if option(argv, "--gunicorn-opts") is None:
            report(
                f"{deployment.name} runs uvicorn (no --gunicorn-opts): its 5 s keep-alive is below the ALB's "
                f"{idle} s idle timeout",
                deployment.urn,
            )
        elif keep_alive is None or int(keep_alive) <= idle:
            report(
                f"{deployment.name}: gunicorn keep-alive {keep_alive or 2} s must exceed the ALB idle timeout {idle} s",
                deployment.urn,
            )


def _max_connections(args: StackValidationArgs) -> int | None:
    """The primary's (a replica shares its parameter group, and serves fewer engines per process)."""
    for instance in of_type(args, "aws:rds/instance:Instance"):
        if is_replica(instance.props):
            continue
        for group in (instance.property_dependencies or {}).get("parameterGroupName") or []:
            for param in as_list(group.props.get("parameters")):
                if param.get("name") == "max_connections":
                    return int(param.get("value"))
        try:
            return DatabaseConfig(instance_class=instance.props.get("instanceClass")).effective_max_connections
        except ValueError:
            return None
    return None


def _connection_budget(args: StackValidationArgs, report: ReportViolation) -> None:
    max_connections = _max_connections(args)
    if max_connections is None:
        return
    reserved = int(args.get_config().get("reservedConnections", 10))
    ceilings = {
        (hpa.props.get("spec") or {}).get("scaleTargetRef", {}).get("name"): int(
            (hpa.props.get("spec") or {}).get("maxReplicas") or 1
        )
        for hpa in of_type(args, "kubernetes:autoscaling/v2:HorizontalPodAutoscaler")
    }
    total, parts = 0, []
    for deployment, container in server_containers(args):
        argv = as_list(container.get("command"))
        env = {k: v.get("value") for k, v in env_of(container).items()}
        name = (deployment.props.get("metadata") or {}).get("name", deployment.name)
        replicas = ceilings.get(name, int((deployment.props.get("spec") or {}).get("replicas") or 1))
        workers = int(option(argv, "--workers") or 4)
        engines = ENGINES_WITH_AUTH if option(argv, "--app-name") in AUTH_APPS else ENGINES_WITHOUT_AUTH
        pool = int(env.get("MLFLOW_SQLALCHEMYSTORE_POOL_SIZE") or DEFAULT_POOL)
        overflow = int(env.get("MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW") or DEFAULT_OVERFLOW)
        processes = replicas * (workers + PARENT_PROCESSES_PER_REPLICA)
        if env.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "true") != "false":
            processes += JOB_PROCESSES * replicas
        total += processes * engines * (pool + overflow)
        parts.append(f"{name}: {processes} processes x {engines} engines x ({pool} + {overflow})")
    if total > max_connections - reserved:
        report(
            f"connection budget {total} ({'; '.join(parts)}) exceeds max_connections {max_connections} - "
            f"{reserved} reserved"
        )


def _public_hostnames(args: StackValidationArgs) -> set[str]:
    names = {r.props.get("name") for r in of_type(args, "aws:route53/record:Record") if r.props.get("aliases")}
    names |= {r.props.get("domainName") for r in of_type(args, "aws:acm/certificate:Certificate")}
    return {n.rstrip(".") for n in names if n}


def _allowed_hosts(args: StackValidationArgs, report: ReportViolation) -> None:
    hostnames = _public_hostnames(args)
    if not hostnames:
        return
    for deployment, container in server_containers(args):
        allowed = set(((env_of(container).get("MLFLOW_SERVER_ALLOWED_HOSTS") or {}).get("value") or "").split(","))
        missing = sorted(h for h in hostnames if h not in allowed)
        if missing:
            report(
                f"{deployment.name} would answer 403 to {', '.join(missing)}: add it to server.allowedHosts",
                deployment.urn,
            )


def _pool_not_in_uri(args: StackValidationArgs, report: ReportViolation) -> None:
    for deployment, container in server_containers(args):
        uri = option(as_list(container.get("command")), "--backend-store-uri") or ""
        if "pool_size" in uri or "max_overflow" in uri:
            report(
                f"{deployment.name}: pool options in the database URI stop MLflow 3 from starting; "
                "use MLFLOW_SQLALCHEMYSTORE_POOL_SIZE / _MAX_OVERFLOW",
                deployment.urn,
            )
        if ":" in uri.split("@")[0].split("//")[-1]:
            report(f"{deployment.name}: the database URI on the command line carries a password", deployment.urn)


def _teams_closed_by_default(args: StackValidationArgs, report: ReportViolation) -> None:
    """With workspaces on (teams declared), production may not fall back to READ or EDIT for a
    user outside its grants: that would reopen every team's data to every user."""
    if not args.get_config().get("production"):
        return
    teams = any("--enable-workspaces" in as_list(c.get("command")) for _, c in server_containers(args))
    permission = (_auth_ini(args) or {}).get("default_permission", "READ (MLflow's default)")
    if teams and not permission.startswith("NO_PERMISSIONS"):
        report(f"teams are declared (workspaces on) but basic_auth.ini has default_permission = {permission}")


POLICIES = [
    StackValidationPolicy(
        name="mlflow-teams-closed-by-default",
        description="A production stack with teams gives users nothing outside their grants.",
        validate=_teams_closed_by_default,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=PRODUCTION_SCHEMA,
        remediation_steps="Remove server.defaultPermission (it defaults to NO_PERMISSIONS with teams).",
    ),
    StackValidationPolicy(
        name="mlflow-basic-auth",
        description="The tracking server requires authentication in every environment.",
        validate=_basic_auth,
        enforcement_level=EnforcementLevel.MANDATORY,
        remediation_steps=f"Keep server.basicAuth: true (renders --app-name {AUTH_APP}).",
    ),
    StackValidationPolicy(
        name="mlflow-auth-db-postgres",
        description="basic-auth users and permissions live in PostgreSQL, never SQLite.",
        validate=_auth_db_postgres,
        enforcement_level=EnforcementLevel.MANDATORY,
        remediation_steps="Mount the rendered basic_auth.ini (database_uri on the auth database).",
    ),
    StackValidationPolicy(
        name="mlflow-secrets-from-secrets",
        description="Flask secret key, admin password and DB password come from Secrets.",
        validate=_secrets_from_secrets,
        enforcement_level=EnforcementLevel.MANDATORY,
        remediation_steps="Reference the mlflow-server Secret with env.valueFrom.secretKeyRef.",
    ),
    StackValidationPolicy(
        name="mlflow-db-verified-least-privilege",
        description="The server verifies RDS's certificate and never connects as the master user.",
        validate=_db_verified_least_privilege,
        enforcement_level=EnforcementLevel.MANDATORY,
        remediation_steps="Render with the default Endpoints (verify-full, RDS CA bundle) and database.appUsername.",
    ),
    StackValidationPolicy(
        name="mlflow-keep-alive-exceeds-alb-idle",
        description="gunicorn keep-alive outlasts the ALB idle timeout (else 502s).",
        validate=_keep_alive,
        enforcement_level=EnforcementLevel.MANDATORY,
        remediation_steps="Set server.keepAliveSeconds above loadBalancer.idleTimeoutSeconds.",
    ),
    StackValidationPolicy(
        name="mlflow-connection-budget",
        description="All server pools together fit the database's max_connections.",
        validate=_connection_budget,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=PolicyConfigSchema(properties={"reservedConnections": {"type": "integer", "default": 10}}),
        remediation_steps=(
            "Lower database.poolSize/maxOverflow or server.workers/maxReplicas, or use a larger instance."
        ),
    ),
    StackValidationPolicy(
        name="mlflow-allowed-hosts",
        description="The server accepts its public hostname.",
        validate=_allowed_hosts,
        enforcement_level=EnforcementLevel.MANDATORY,
        remediation_steps="List loadBalancer.hostname in server.allowedHosts.",
    ),
    StackValidationPolicy(
        name="mlflow-database-uri-clean",
        description="No pool options and no password in the database URI.",
        validate=_pool_not_in_uri,
        enforcement_level=EnforcementLevel.MANDATORY,
        remediation_steps="Pools via MLFLOW_SQLALCHEMYSTORE_*; password via PGPASSWORD from a Secret.",
    ),
]
