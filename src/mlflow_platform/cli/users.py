"""basic-auth users for machines (CI, CronJobs)."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.markup import escape

from .connect import mlflow_client
from .options import DryRun, Local, TrackingUri
from .output import fail, out

PANEL = "Runbooks"
app = typer.Typer()


@app.command("ensure-user", rich_help_panel=PANEL)
def ensure_user_command(
    username: Annotated[str, typer.Option(help="User to create or update.")],
    password_env: Annotated[
        str, typer.Option(help="Variable holding the user's password.")
    ] = "MLFLOW_PLATFORM_USER_PASSWORD",
    admin: Annotated[bool, typer.Option("--admin/--no-admin", help="Make the user an admin.")] = False,
    dry_run: DryRun = False,
    tracking_uri: TrackingUri = None,
    local: Local = False,
) -> None:
    """Create a basic-auth user, or bring its password and admin flag up to date (idempotent).
    Runs as the admin from MLFLOW_TRACKING_USERNAME / _PASSWORD.

    Example:
      MLFLOW_PLATFORM_USER_PASSWORD=... mlflow-platform ensure-user \\
        --username mlflow-ops --admin
    """
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    password = os.environ.get(password_env)
    if not password:
        raise fail(f"set {password_env} to the user's password")
    mlflow_client(tracking_uri, local)
    auth = AuthServiceClient(os.environ["MLFLOW_TRACKING_URI"])
    try:
        auth.get_user(username)
    except MlflowException as exc:  # only "no such user" means create; anything else is an error
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise fail(f"cannot look up user {username}: {exc.message}") from None
        exists = False
    else:
        exists = True
    if dry_run:
        out.print(
            f"dry run: would {'update' if exists else 'create'} user {escape(username)}"
            f"{' (admin)' if admin else ''}; nothing changed"
        )
        return
    if exists:
        auth.update_user_password(username, password)
    else:
        auth.create_user(username, password)
    auth.update_user_admin(username, admin)
    out.print(f"user {escape(username)} {'updated' if exists else 'created'}{' (admin)' if admin else ''}")
