"""Database runbooks: backup-first schema upgrade and the restore drill."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..runbooks import RunbookError
from .connect import database_uri, local_platform
from .options import DryRun, Local
from .output import fail, out, print_actions

PANEL = "Runbooks"
app = typer.Typer()


@app.command("db-upgrade", rich_help_panel=PANEL)
def db_upgrade_command(
    backend_store_uri: Annotated[
        str | None,
        typer.Option(envvar="MLFLOW_BACKEND_STORE_URI", help="Tracking database (password via PGPASSWORD)."),
    ] = None,
    backup_dir: Annotated[Path | None, typer.Option(help="pg_dump target directory.")] = None,
    rds_instance: Annotated[str | None, typer.Option(help="Take an RDS snapshot of this instance instead.")] = None,
    auth_database: Annotated[
        str | None, typer.Option(help="Also back up and migrate this basic-auth database (on the same server).")
    ] = None,
    dry_run: DryRun = False,
    local: Local = False,
) -> None:
    """Back up (pg_dump locally, an RDS snapshot on AWS), then `mlflow db upgrade`; no backup,
    no upgrade.

    Examples:
      mlflow-platform db-upgrade --local
      mlflow-platform db-upgrade --rds-instance mlflow-prod
    """
    from ..runbooks.database import db_upgrade

    uri = database_uri(backend_store_uri, local)
    if local:
        platform = local_platform()
        auth_database = auth_database or platform.config.database.auth_database
        if backup_dir is None and rds_instance is None:
            backup_dir = platform.backup_dir
    try:
        report = db_upgrade(
            uri, backup_dir=backup_dir, rds_instance=rds_instance, auth_database=auth_database, dry_run=dry_run
        )
    except RunbookError as exc:
        raise fail(str(exc) + "; the schema was not touched") from None
    print_actions("db-upgrade", report.actions, dry_run)
    if report.upgraded:
        out.print(f"[bold green]upgraded[/] after backup {escape(str(report.backup))}")


@app.command("db-restore", rich_help_panel=PANEL)
def db_restore_command(
    backup: Annotated[Path | None, typer.Option(help="A pg_dump file written by db-upgrade or local upgrade.")] = None,
    snapshot: Annotated[str | None, typer.Option(help="An RDS snapshot (e.g. the one a failed upgrade names).")] = None,
    rds_instance: Annotated[str | None, typer.Option(help="With --snapshot: the instance to put it back on.")] = None,
    auth_database: Annotated[
        str, typer.Option(help="The basic-auth database, restored too from a snapshot.")
    ] = "mlflow_auth",
    restored_endpoint: Annotated[
        str | None,
        typer.Option(
            help="With --snapshot: HOST:PORT reaching the temporary instance (a tunnel), not its RDS address."
        ),
    ] = None,
    backend_store_uri: Annotated[
        str | None,
        typer.Option(envvar="MLFLOW_BACKEND_STORE_URI", help="The tracking database, as its owner."),
    ] = None,
    dry_run: DryRun = False,
    local: Local = False,
) -> None:
    """Replace databases with a backup. Destructive: everything written since the backup is gone.
    With --backup, the database the dump was taken from; with --snapshot, the tracking and auth
    databases as they were in the snapshot (restored to a temporary instance, copied over, then
    deleted), so the instance Pulumi manages stays. With --local the tracking server is stopped
    first; elsewhere the writers must be stopped (a failed upgrade leaves them stopped).

    Example:
      mlflow-platform db-restore --snapshot \\
        mlflow-prod-upgrade-3-10-1-to-3-17-2-… --rds-instance mlflow-prod
    """
    if (backup is None) == (snapshot is None):
        raise fail("give one of --backup (a pg_dump file) or --snapshot (an RDS snapshot)")
    uri = database_uri(backend_store_uri, local)
    if snapshot:
        _restore_snapshot(uri, snapshot, rds_instance, auth_database, restored_endpoint, dry_run)
        return
    from ..runbooks.database import dump_database_name, restore_database

    target = dump_database_name(backup)
    actions = [f"drop and re-create database {target}", f"pg_restore {backup}"]
    print_actions("db-restore", (["stop the local tracking server"] if local else []) + actions, dry_run)
    if dry_run:
        return
    if local:  # no writer while the database is replaced
        local_platform().stop_tracking(log=out.print)
    try:
        restored = restore_database(uri, backup)
    except RunbookError as exc:
        raise fail(str(exc)) from None
    out.print(f"[bold green]restored[/] {escape(restored)} from {escape(str(backup))}", highlight=False)
    if local:
        out.print("start the server again with `mlflow-platform local up`")


def _restore_snapshot(
    uri: str, snapshot: str, instance: str | None, auth_database: str, endpoint: str | None, dry_run: bool
) -> None:
    from sqlalchemy.engine import make_url

    from ..runbooks.database import restore_from_snapshot

    if not instance:
        raise fail("--snapshot needs --rds-instance: the instance whose databases it replaces")
    tunnel = None
    if endpoint:
        host, _, port = endpoint.rpartition(":")
        if not host or not port.isdigit():
            raise fail(f"--restored-endpoint {endpoint!r}: give HOST:PORT, e.g. 127.0.0.1:15432")
        tunnel = (host, int(port))
    databases = [make_url(uri).database, auth_database]
    actions = [f"restore {snapshot} to a temporary instance beside {instance}"]
    actions += [f"drop and re-create database {d} on {instance}, then copy it from the snapshot" for d in databases]
    actions += ["delete the temporary instance"]
    print_actions("db-restore", actions, dry_run)
    if dry_run:
        return
    try:
        restored = restore_from_snapshot(uri, snapshot, instance, databases, endpoint=tunnel, log=out.print)
    except RunbookError as exc:
        raise fail(str(exc)) from None
    out.print(f"[bold green]restored[/] {', '.join(restored)} from {escape(snapshot)}", highlight=False)
    out.print("then: `mlflow-platform db clear-failed-upgrade --namespace <ns>`, revert the MLflow bump, `pulumi up`")


@app.command("restore-drill", rich_help_panel=PANEL)
def restore_drill_command(
    backend_store_uri: Annotated[
        str | None,
        typer.Option(envvar="MLFLOW_BACKEND_STORE_URI", help="Source database (password via PGPASSWORD)."),
    ] = None,
    backup_dir: Annotated[Path | None, typer.Option(help="Where the backups are.")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the scratch database.")] = False,
    local: Local = False,
) -> None:
    """Restore the newest backup into a scratch database and check that runs, model versions and
    champion aliases resolve there as in the source.

    Example:
      mlflow-platform restore-drill --local
    """
    from ..runbooks.database import restore_drill

    uri = database_uri(backend_store_uri, local)
    backup_dir = backup_dir or (local_platform().backup_dir if local else None)
    if backup_dir is None:
        raise fail("pass --backup-dir (or --local)")
    try:
        report = restore_drill(uri, backup_dir, keep=keep)
    except RunbookError as exc:
        raise fail(str(exc)) from None
    table = Table("", "source", "restored", title=f"restore drill of {Path(report.backup).name}")
    table.add_row("active runs", str(report.runs[0]), str(report.runs[1]))
    table.add_row("model versions", str(report.model_versions[0]), str(report.model_versions[1]))
    for name, (source, restored) in report.champions.items():
        table.add_row(f"{escape(name)}@champion", f"v{source}", f"v{restored}")
    out.print(table)
    if not report.passed:
        raise fail("restore drill failed: " + "; ".join(report.problems))
    out.print("[bold green]restore drill passed[/]")
