"""The migration step: both schemas brought to the installed MLflow's head, as the schema owner.

It connects as the owner (the RDS master user): it creates the auth database if missing, upgrades
both schemas with MLflow's own migrations, then creates or updates the server's role with data
rights only (no DDL, no CREATEDB, no CREATEROLE). The master password therefore never reaches a
server pod, and a compromised server cannot alter or drop the schema. A schema change (not a
fresh database, not one already current) runs only through the coordinated upgrade.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Callable

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from ..errors import RunbookError, UpgradeError, first_line
from ..server_spec import APP_DB_PASSWORD_ENV
from .connection import connect, with_database
from .revisions import UPGRADE, schema_plan
from .tuning import apply_tuning

Log = Callable[[str], None]


def ensure_database(backend_store_uri: str, database: str) -> bool:
    """Create ``database`` on the server behind ``backend_store_uri`` if missing; True if created."""
    with connect(backend_store_uri) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        return True


def upgrade_tracking_schema(backend_store_uri: str) -> None:
    """`mlflow db upgrade`: MLflow 3 no longer migrates an old schema when the server starts."""
    subprocess.run([sys.executable, "-m", "mlflow", "db", "upgrade", backend_store_uri], check=True)


def upgrade_auth_schema(auth_uri: str) -> None:
    """basic-auth's own migrations (what its server runs at start, which the DML-only role cannot)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mlflow.server.auth.db.utils import migrate_if_needed
        from mlflow.store.db.utils import create_sqlalchemy_engine_with_retry
    engine = create_sqlalchemy_engine_with_retry(auth_uri)
    try:
        migrate_if_needed(engine, "head")
    finally:
        engine.dispose()


def migrate_schemas(owner_uri: str, auth_database: str | None) -> None:
    """Both schemas to the image's head: the tracking database of ``owner_uri`` and, when named,
    the auth database on the same server. The coordinated upgrade's default migration."""
    upgrade_tracking_schema(owner_uri)
    if auth_database:
        upgrade_auth_schema(with_database(owner_uri, auth_database))


def ensure_app_role(owner_uri: str, role: str, password: str, databases: list[str]) -> bool:
    """Create or update the server's role and grant it data rights in ``databases``; True if created.

    Grants are re-applied on every run so tables added by an upgrade are covered; default
    privileges cover tables the owner creates later (e.g. by MLflow's own lazy migrations).
    """
    with connect(owner_uri) as conn:
        created = not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        # Only a superuser may even restate NOSUPERUSER on an existing role, and neither the RDS
        # master user nor the local owner is one: ALTER keeps to attributes the owner may set.
        attributes = (
            "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT" if created else "LOGIN NOCREATEDB NOCREATEROLE"
        )
        verb = "CREATE" if created else "ALTER"
        conn.execute(
            sql.SQL(f"{verb} ROLE {{}} WITH {attributes} PASSWORD {{}}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
    for database in databases:
        with connect(owner_uri, database) as conn:
            _grant_data_rights(conn, database, role)
    return created


def _grant_data_rights(conn: psycopg.Connection, database: str, role: str) -> None:
    r, db = sql.Identifier(role), sql.Identifier(database)
    statements = (
        "GRANT CONNECT ON DATABASE {db} TO {r}",
        "GRANT USAGE ON SCHEMA public TO {r}",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {r}",
        "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {r}",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {r}",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {r}",
    )
    for statement in statements:
        conn.execute(sql.SQL(statement).format(db=db, r=r))


def refuse_schema_change(owner_uri: str, auth_database: str) -> None:
    """Without a coordinator, a database behind the image is never migrated in place."""
    plan = schema_plan(owner_uri, auth_database)
    if plan.action == UPGRADE:
        raise UpgradeError(
            f"the schema changes ({plan.describe()}) and MLflow needs every writer stopped and a backup "
            "first: run `mlflow-platform db upgrade --local` (locally) or deploy (the migration Job does it)"
        )


def prepare(
    owner_uri: str,
    auth_database: str,
    app_role: str | None,
    app_password: str | None,
    log: Log = print,
    coordinate: Callable[[str, str], object] | None = None,
    index_budget: float | None = None,
) -> None:
    """The whole migration step; safe to re-run. A schema change runs only through ``coordinate``
    (writers stopped, backup first); without it, a database behind the image is refused. Index
    builds stop after ``index_budget`` seconds (a Job's deadline must not cut the step short)."""
    created = ensure_database(owner_uri, auth_database)
    log(f"auth database {auth_database}: {'created' if created else 'exists'}")
    writers_stopped = False
    if coordinate is not None:
        writers_stopped = schema_plan(owner_uri, auth_database).action == UPGRADE
        coordinate(owner_uri, auth_database)
    else:
        refuse_schema_change(owner_uri, auth_database)
    upgrade_tracking_schema(owner_uri)
    log("tracking schema: up to date")
    upgrade_auth_schema(with_database(owner_uri, auth_database))
    log("auth schema: up to date")
    if app_role:
        _grant_app_role(owner_uri, auth_database, app_role, app_password, log)
    tune(owner_uri, log, build=not writers_stopped, budget=index_budget)


def tune(owner_uri: str, log: Log, *, build: bool = True, budget: float | None = None) -> None:
    """The platform's indexes and autovacuum settings (``tuning``), after MLflow's migrations so
    one a migration dropped comes back; and pg_stat_statements for `db report` where the owner may
    create it (RDS's master user may; elsewhere the report says how).

    Best effort: the schema is migrated and the role granted by now, and a deploy must not fail
    (or keep writers stopped) over an index; what was not done is logged, and `db tune` or the
    next deploy does it. No index is built while a schema change keeps the writers stopped."""
    try:
        with connect(owner_uri) as conn:
            done = apply_tuning(conn, log=log, build=build, budget=budget)
            log(f"tuning: {'; '.join(done) if done else 'in place'}")
    except (psycopg.Error, RunbookError) as exc:
        log(f"tuning: not finished ({first_line(exc)}); run `mlflow-platform db tune` later")
    try:
        with connect(owner_uri) as conn:
            _statement_statistics(conn, log)
    except psycopg.Error as exc:
        log(f"pg_stat_statements not checked ({first_line(exc)}): `db report` may list no statements")


def _statement_statistics(conn: psycopg.Connection, log: Log) -> None:
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    except psycopg.Error as exc:
        log(f"pg_stat_statements not created ({first_line(exc)}): `db report` lists no statements")


def _grant_app_role(owner_uri: str, auth_database: str, role: str, password: str | None, log: Log) -> None:
    if not password:
        raise ValueError(f"no password for the application role {role}: set {APP_DB_PASSWORD_ENV}")
    tracking_database = make_url(owner_uri).database
    created = ensure_app_role(owner_uri, role, password, [tracking_database, auth_database])
    verb = "created" if created else "updated"
    log(f"role {role}: {verb}, data rights on {tracking_database} and {auth_database}")
