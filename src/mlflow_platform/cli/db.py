"""`mlflow-platform db …`: schema steps the pre-rollout migration Job runs."""

from __future__ import annotations

from typing import Annotated

import typer

from .output import fail, out

app = typer.Typer(help="Database schema steps (run by the pre-rollout migration Job).", no_args_is_help=True)


@app.command("prepare")
def prepare_command(
    backend_store_uri: Annotated[str, typer.Option(help="Tracking database URL (password via PGPASSWORD).")],
    auth_database: Annotated[str, typer.Option(help="basic-auth database to create if missing.")] = "mlflow_auth",
) -> None:
    """Create the auth database if missing, then run `mlflow db upgrade` on the tracking database.

    Example: PGPASSWORD=... mlflow-platform db prepare --backend-store-uri postgresql+psycopg://mlflow@db:5432/mlflow
    """
    from ..db import ensure_database, upgrade_schema

    try:
        created = ensure_database(backend_store_uri, auth_database)
        out.print(f"auth database {auth_database}: {'created' if created else 'exists'}")
        upgrade_schema(backend_store_uri)
    except Exception as exc:  # a Job's log is all on-call sees: say what failed, plainly
        raise fail(f"database preparation failed: {exc}") from None
    out.print("tracking schema: up to date")
