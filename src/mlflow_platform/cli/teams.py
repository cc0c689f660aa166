"""`mlflow-platform teams …`: reconcile the stack's teams onto a server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .connect import check_connection, local_platform
from .options import DryRun, Local
from .output import fail, out

app = typer.Typer(help="Teams: workspaces, roles and users from the stack's `teams` section.", no_args_is_help=True)


@app.command("sync")
def sync_command(
    stack: Annotated[
        str | None, typer.Option("--stack", "-s", help="Stack name (dev, staging, prod) or a stack file.")
    ] = None,
    tracking_uri: Annotated[
        str | None, typer.Option(envvar="MLFLOW_TRACKING_URI", help="The server (admin credentials from the env).")
    ] = None,
    teams_file: Annotated[
        Path | None, typer.Option(help="The teams as JSON (what the deploy's teams Job mounts), instead of --stack.")
    ] = None,
    secrets_prefix: Annotated[
        str | None,
        typer.Option(help="Keep new users' passwords in Secrets Manager under this prefix, e.g. mlflow-prod/users/."),
    ] = None,
    prune: Annotated[
        bool, typer.Option("--prune", help="Also remove roles and role assignments the stack no longer declares.")
    ] = False,
    dry_run: DryRun = False,
    keep_undeclared_users: Annotated[
        bool,
        typer.Option(
            "--keep-undeclared-users",
            help="Leave role assignments of users the stack does not name (SSO users; on by itself with `sso`).",
        ),
    ] = False,
    local: Local = False,
) -> None:
    """Create or update each declared team's workspace, roles, users and role assignments; a second
    run changes nothing. Removals are listed, and made only with --prune (see them first with
    --prune --dry-run). Users and workspaces are never deleted.

    Examples:
      mlflow-platform teams sync --local
      mlflow-platform teams sync --stack prod --prune --dry-run
    """
    from ..teams import sync

    if local:
        teams, passwords, tracking_uri, sso = _local_sources()
    else:
        teams, sso = (_file_teams(teams_file), False) if teams_file else _stack_teams_and_sso(stack)
        passwords = _secrets_manager(secrets_prefix)
    keep_undeclared_users = keep_undeclared_users or sso
    if not tracking_uri:
        raise fail("no tracking server: pass --tracking-uri (or set MLFLOW_TRACKING_URI), or --local")
    if passwords is None:
        raise fail("pass --secrets-prefix (where new users' passwords go), or --local")
    if not teams:
        out.print("the stack declares no teams: nothing to sync (workspaces stay off)")
        return
    check_connection(tracking_uri)
    report = sync(
        tracking_uri, teams, passwords, prune=prune, dry_run=dry_run, keep_undeclared_users=keep_undeclared_users
    )
    _print_report(report, dry_run)


def _local_sources():
    """The local platform's teams, password file, URI and admin credentials (into the environment)."""
    from ..team_passwords import PasswordFile

    platform = local_platform()
    for key, value in platform.client_env().items():
        if key.startswith("MLFLOW_TRACKING_"):
            os.environ[key] = value
    passwords = PasswordFile(platform.team_passwords_file)
    return platform.config.teams, passwords, os.environ["MLFLOW_TRACKING_URI"], platform.config.sso is not None


def _secrets_manager(prefix: str | None):
    from ..team_passwords import SecretsManagerPasswords

    return SecretsManagerPasswords(prefix) if prefix else None


def _stack_teams_and_sso(stack: str | None):
    config = _stack_config(stack)
    return config.teams, config.sso is not None


def _file_teams(path: Path):
    import json

    from pydantic import TypeAdapter, ValidationError

    from ..config import StackConfig, TeamConfig, team_problems

    try:
        teams = TypeAdapter(tuple[TeamConfig, ...]).validate_python(json.loads(path.read_text()))
    except (OSError, ValueError, ValidationError) as exc:
        raise fail(f"{path}: not a teams file: {str(exc).splitlines()[0]}") from None
    problems = team_problems(teams, StackConfig.model_fields["server"].default.admin_username)
    if problems:
        raise fail(f"{path}: " + "; ".join(f"{k}: {m}" for k, m in problems))
    return teams


def _stack_config(stack: str | None):
    from ..config import ConfigError, load_stack_file
    from ..errors import PlatformError
    from .stack import _stack_path

    if not stack:
        raise fail("name a stack: --stack prod (or a stack file), or --local")
    try:
        return load_stack_file(_stack_path(stack)).config
    except (ConfigError, PlatformError) as exc:
        raise fail(str(exc)) from None


def _print_report(report, dry_run: bool) -> None:
    verb = "[yellow]would[/] " if dry_run else ""
    for change in report.applied:
        out.print(f"  {verb}{escape(change)}", highlight=False)
    for change in report.pending_removals:
        out.print(f"  [dim]not declared (removed with --prune):[/] {escape(change)}", highlight=False)
    if not report.applied:
        out.print(
            "teams: nothing to change"
            + (f"; {len(report.pending_removals)} removals need --prune" if report.pending_removals else "")
        )
    else:
        out.print(f"teams: {len(report.applied)} change(s) {'planned' if dry_run else 'applied'}")


@app.command("password")
def password_command(username: Annotated[str, typer.Argument(help="A user `teams sync --local` created.")]) -> None:
    """Print the password `teams sync --local` generated for a user of the local platform.

    Example:
      mlflow-platform teams password alice
    """
    from ..team_passwords import PasswordFile

    password = PasswordFile(local_platform().team_passwords_file).get(username)
    if password is None:
        raise fail(f"no generated password for {username!r}: it is not a team user created on this platform")
    out.print(password, highlight=False)
