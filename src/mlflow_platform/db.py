"""Database preparation shared by the migration Job and the runbooks: ensure the auth database
exists, then bring the tracking schema up to date with MLflow's own `mlflow db upgrade`."""

from __future__ import annotations

import subprocess
import sys

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url


def ensure_database(backend_store_uri: str, database: str) -> bool:
    """Create ``database`` on the server behind ``backend_store_uri`` if missing; True if created.

    The password comes from PGPASSWORD (libpq), like the server's own connections.
    """
    url = make_url(backend_store_uri)
    params = {
        "host": url.host,
        "port": url.port or 5432,
        "user": url.username,
        "dbname": url.database,
        "autocommit": True,
        "connect_timeout": 10,
    }
    params.update({k: v for k, v in url.query.items() if k == "sslmode"})
    if url.password:
        params["password"] = url.password
    with psycopg.connect(**params) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        return True


def upgrade_schema(backend_store_uri: str) -> None:
    """`mlflow db upgrade`: MLflow 3 no longer migrates an old schema when the server starts."""
    subprocess.run([sys.executable, "-m", "mlflow", "db", "upgrade", backend_store_uri], check=True)
