"""`mlflow-platform db …`: schema steps the pre-rollout migration Job runs."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from ..server_spec import APP_DB_PASSWORD_ENV
from .output import fail, out

app = typer.Typer(help="Database schema steps (run by the pre-rollout migration Job).", no_args_is_help=True)


@app.command("prepare")
def prepare_command(
    backend_store_uri: Annotated[
        str, typer.Option(help="Tracking database URL as the schema owner (password via PGPASSWORD).")
    ],
    auth_database: Annotated[str, typer.Option(help="basic-auth database to create if missing.")] = "mlflow_auth",
    app_role: Annotated[
        str | None,
        typer.Option(help=f"Role to create or update with data rights only (password via ${APP_DB_PASSWORD_ENV})."),
    ] = None,
) -> None:
    """Create the auth database if missing, upgrade both schemas, then grant the server's role.

    Example: PGPASSWORD=... mlflow-platform db prepare --backend-store-uri postgresql+psycopg://mlflow@db:5432/mlflow
    """
    from ..db import prepare

    try:
        prepare(backend_store_uri, auth_database, app_role, os.environ.get(APP_DB_PASSWORD_ENV), log=out.print)
    except Exception as exc:  # a Job's log is all on-call sees: say what failed, plainly
        raise fail(f"database preparation failed: {exc}") from None
