"""Database preparation shared by the migration step and the runbooks.

The migration step connects as the schema owner (the RDS master user): it creates the auth
database if missing, upgrades both schemas with MLflow's own migrations, then creates or updates
the server's role with data rights only (no DDL, no CREATEDB, no CREATEROLE). The master password
therefore never reaches a server pod, and a compromised server cannot alter or drop the schema.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Callable

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from .server_spec import APP_DB_PASSWORD_ENV

#: libpq settings that may ride in a SQLAlchemy URL's query string.
_LIBPQ_QUERY_KEYS = ("sslmode", "sslrootcert")


def libpq_params(uri: str, database: str | None = None) -> dict:
    """psycopg connection keywords from a SQLAlchemy URL (TLS settings included); the password
    comes from the URL or, like the server's own connections, from PGPASSWORD."""
    url = make_url(uri)
    params = {
        "host": url.host or "127.0.0.1",
        "port": url.port or 5432,
        "user": url.username,
        "dbname": database or url.database,
        "connect_timeout": 10,
    }
    params.update({k: v for k, v in url.query.items() if k in _LIBPQ_QUERY_KEYS})
    if url.password:
        params["password"] = url.password
    return params


def connect(uri: str, database: str | None = None) -> psycopg.Connection:
    return psycopg.connect(**libpq_params(uri, database), autocommit=True)


def ensure_database(backend_store_uri: str, database: str) -> bool:
    """Create ``database`` on the server behind ``backend_store_uri`` if missing; True if created."""
    with connect(backend_store_uri) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        return True


def upgrade_schema(backend_store_uri: str) -> None:
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


def prepare(
    owner_uri: str,
    auth_database: str,
    app_role: str | None,
    app_password: str | None,
    log=print,
    coordinate: Callable[[str, str], object] | None = None,
) -> None:
    """The whole migration step; safe to re-run. A schema change runs only through ``coordinate``
    (writers stopped, backup first); without it, a database behind the image is refused."""
    from .upgrades import UpgradeError
    from .upgrades.revisions import UPGRADE, schema_plan

    created = ensure_database(owner_uri, auth_database)
    log(f"auth database {auth_database}: {'created' if created else 'exists'}")
    if coordinate is not None:
        coordinate(owner_uri, auth_database)
    else:
        plan = schema_plan(owner_uri, auth_database)
        if plan.action == UPGRADE:
            raise UpgradeError(
                f"the schema changes ({plan.describe()}) and MLflow needs every writer stopped and a backup "
                "first: run `mlflow-platform local upgrade` (locally) or deploy (the migration Job does it)"
            )
    upgrade_schema(owner_uri)
    log("tracking schema: up to date")
    auth_uri = make_url(owner_uri).set(database=auth_database).render_as_string(hide_password=False)
    upgrade_auth_schema(auth_uri)
    log("auth schema: up to date")
    if app_role:
        if not app_password:
            raise ValueError(f"no password for the application role {app_role}: set {APP_DB_PASSWORD_ENV}")
        tracking_database = make_url(owner_uri).database
        created = ensure_app_role(owner_uri, app_role, app_password, [tracking_database, auth_database])
        verb = "created" if created else "updated"
        log(f"role {app_role}: {verb}, data rights on {tracking_database} and {auth_database}")
