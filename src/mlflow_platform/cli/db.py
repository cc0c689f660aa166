"""`mlflow-platform db …`: everything done to the databases, in one group.

The deploy's Jobs run `prepare` (before the rollout) and `resume` (after it); operators run
`upgrade` (the coordinated upgrade, always after a fresh backup), `restore` and `restore-drill`.
The old top-level spellings (`db-upgrade`, `db-restore`, `restore-drill`, `local upgrade`) stay
as hidden aliases of the same functions (``cli/__init__.py``), for runbooks and drills that use them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import psycopg
import typer
from rich.markup import escape
from rich.table import Table

from ..config import DatabaseConfig
from ..errors import PlatformError, RunbookError, UpgradeError, first_line
from ..server_spec import APP_DB_PASSWORD_ENV
from .connect import database_uri, local_platform, platform_for
from .options import DryRun, Local, StackFile, StateDir
from .output import fail, out, print_actions

app = typer.Typer(
    help="The databases: the deploy Jobs' schema steps, the coordinated upgrade, restores, the restore drill.",
    no_args_is_help=True,
)
JOBS, RUNBOOKS = "Run by the deploy's Jobs", "Runbooks"
#: The stacks' auth database unless they name another (database.authDatabase).
AUTH_DATABASE = DatabaseConfig.model_fields["auth_database"].default

Namespace = Annotated[
    str | None, typer.Option(help="Coordinate the writers in this namespace (in-cluster credentials).")
]
Deployments = Annotated[list[str] | None, typer.Option("--deployment", help="A writer Deployment (repeatable).")]
CronJobs = Annotated[list[str] | None, typer.Option("--cronjob", help="A writer CronJob (repeatable).")]
WriterPods = Annotated[
    list[str] | None, typer.Option("--writer-pods", help="Label selector of writer pods to wait for (repeatable).")
]
BackendStoreUri = Annotated[
    str | None,
    typer.Option(
        envvar="MLFLOW_BACKEND_STORE_URI", help="The tracking database, as its owner (password via PGPASSWORD)."
    ),
]
BackupDir = Annotated[Path | None, typer.Option(help="Where the pg_dump files go (or are, for the drill).")]
RdsInstance = Annotated[str | None, typer.Option(help="Take an RDS snapshot of this instance instead of pg_dump.")]


def _say(line: str) -> None:
    """A log line whole (file names, URIs and revisions are never wrapped mid-word)."""
    out.print(line, highlight=False, soft_wrap=True)


def _writers(namespace: str, deployments, cronjobs, writer_pods):
    from ..database.kubernetes import KubernetesWriters

    if not deployments:
        raise fail("--namespace needs at least one --deployment (the server's)")
    return KubernetesWriters(namespace, tuple(deployments), tuple(cronjobs or ()), tuple(writer_pods or ()))


@app.command("prepare", rich_help_panel=JOBS)
def prepare_command(
    backend_store_uri: Annotated[
        str, typer.Option(help="Tracking database URL as the schema owner (password via PGPASSWORD).")
    ],
    auth_database: Annotated[str, typer.Option(help="basic-auth database to create if missing.")] = AUTH_DATABASE,
    app_role: Annotated[
        str | None,
        typer.Option(help=f"Role to create or update with data rights only (password via ${APP_DB_PASSWORD_ENV})."),
    ] = None,
    namespace: Namespace = None,
    deployment: Deployments = None,
    cronjob: CronJobs = None,
    writer_pods: WriterPods = None,
    rds_instance: Annotated[
        str | None, typer.Option(help="With --namespace: snapshot this RDS instance before a schema change.")
    ] = None,
    index_build_budget: Annotated[
        float | None,
        typer.Option(
            min=1, max=7 * 86400, help="Seconds all index builds may take; one still running then is cancelled."
        ),
    ] = None,
) -> None:
    """Create the auth database if missing, upgrade both schemas, grant the server's role, then
    ensure the platform's indexes (`db tune`).

    With --namespace and --rds-instance a schema change is coordinated: the writers are stopped, the
    instance is snapshotted, both schemas are migrated and verified; the new version's rollout and
    `db resume` start the writers again. Without them a schema change is refused.

    Example:
      PGPASSWORD=... mlflow-platform db prepare --backend-store-uri \\
        postgresql+psycopg://mlflow@db:5432/mlflow
    """
    from ..database.schema import prepare

    coordinate = _coordinator(namespace, deployment, cronjob, writer_pods, rds_instance) if namespace else None
    password = os.environ.get(APP_DB_PASSWORD_ENV)
    try:
        prepare(backend_store_uri, auth_database, app_role, password, out.print, coordinate, index_build_budget)
    except UpgradeError as exc:
        raise fail(f"database preparation refused: {exc}") from None
    except Exception as exc:  # a Job's log is all on-call sees: say what failed, plainly
        raise fail(f"database preparation failed: {exc}") from None


def _coordinator(namespace: str, deployments, cronjobs, writer_pods, rds_instance: str | None):
    """The coordinated upgrade in a cluster: writers stopped, the RDS instance snapshotted first."""
    from ..database.upgrade import RdsSnapshot, coordinated_upgrade

    if not rds_instance:
        raise fail("--namespace needs --rds-instance: a schema change is never migrated without a snapshot")
    writers = _writers(namespace, deployments, cronjobs, writer_pods)
    backup = RdsSnapshot(rds_instance)

    def coordinate(uri: str, auth: str) -> None:
        coordinated_upgrade(uri, auth, writers, backup, log=out.print)

    return coordinate


@app.command("resume", rich_help_panel=JOBS)
def resume_command(
    namespace: Annotated[str, typer.Option(help="The namespace the migration Job stopped writers in.")],
    deployment: Deployments = None,
    cronjob: CronJobs = None,
) -> None:
    """After the new version's rollout: scale the Deployments back to what they ran before the
    upgrade, un-suspend the CronJobs, and wait until the pods are available. Nothing to do when no
    upgrade stopped them; refused while a failed upgrade is recorded.

    Example:
      mlflow-platform db resume --namespace mlflow --deployment \\
        mlflow-server --cronjob mlflow-gc
    """
    writers = _writers(namespace, deployment, cronjob, None)
    try:
        writers.resume(out.print)
        writers.wait_until_available(out.print)
    except UpgradeError as exc:
        raise fail(str(exc)) from None


@app.command("clear-failed-upgrade", rich_help_panel=JOBS)
def clear_failed_upgrade_command(
    namespace: Annotated[str, typer.Option(help="The stack's namespace.")],
    deployment: Annotated[str, typer.Option(help="The server Deployment.")] = "mlflow-server",
    dry_run: DryRun = False,
) -> None:
    """After restoring (or checking) the data a failed upgrade left: remove the mark that keeps
    deploys from starting the writers. Run it, then `pulumi up`.

    Example:
      mlflow-platform db clear-failed-upgrade --namespace mlflow
    """
    writers = _writers(namespace, [deployment], None, None)
    failure = writers.failure()
    if not failure:
        out.print(f"no failed upgrade is recorded on deployment/{deployment}")
        return
    print_actions(
        "clear-failed-upgrade", [f"recorded: {failure}", f"remove the mark on deployment/{deployment}"], dry_run
    )
    if not dry_run:
        writers.clear_failure(out.print)


# -- the coordinated upgrade ---------------------------------------------------------------------------


@app.command("upgrade", rich_help_panel=RUNBOOKS)
def upgrade_command(
    backend_store_uri: BackendStoreUri = None,
    backup_dir: BackupDir = None,
    rds_instance: RdsInstance = None,
    auth_database: Annotated[
        str | None, typer.Option(help="Also back up and migrate this basic-auth database (on the same server).")
    ] = None,
    dry_run: DryRun = False,
    local: Local = False,
) -> None:
    """The coordinated schema upgrade after an MLflow bump: back up (always, even when the schema is
    already current), then, if the schema changes, migrate both schemas and verify revisions and
    row counts. With --local the tracking server is stopped for the migration and started again,
    and both databases go to --backup-dir (default: the platform's backups). Elsewhere stop the
    writers first; the backup is pg_dump to --backup-dir or an RDS snapshot (--rds-instance). On
    failure the writers stay stopped and the restore commands are printed.

    Examples:
      mlflow-platform db upgrade --local
      mlflow-platform db upgrade --rds-instance mlflow-prod \\
        --backend-store-uri postgresql+psycopg://mlflow@db:5432/mlflow
    """
    if local:
        _upgrade_local(local_platform(), backup_dir, rds_instance, auth_database, dry_run)
    else:
        _upgrade_database(backend_store_uri, backup_dir, rds_instance, auth_database, dry_run)


def local_upgrade_command(state_dir: StateDir = None, stack_file: StackFile = None) -> None:
    """The coordinated schema upgrade on the local platform: `mlflow-platform db upgrade --local`.

    Example:
      mlflow-platform db upgrade --local
    """
    platform = platform_for(state_dir, stack_file)
    if not platform.started_before:
        raise fail(f"no local platform in {platform.state_dir}; start one with `mlflow-platform local up`")
    _upgrade_local(platform, None, None, None, False)


def _upgrade_local(platform, backup_dir: Path | None, rds_instance, auth_database: str | None, dry_run: bool) -> None:
    from ..local.upgrade import upgrade_local

    if rds_instance:
        raise fail("--rds-instance snapshots a database in AWS; with --local the backup is pg_dump (--backup-dir)")
    target = backup_dir or platform.backup_dir
    auth = auth_database or platform.config.database.auth_database
    databases = f"{platform.config.database.tracking_database} and {auth}"
    actions = [
        f"back up {databases} (pg_dump to {target}), always, even when the schema is current",
        "migrate both schemas if they are behind this MLflow: stop the local tracking server, migrate, "
        "verify revisions and row counts, start it",
    ]
    print_actions("db upgrade", actions, dry_run)
    if not dry_run:
        _run_upgrade(
            lambda: upgrade_local(platform, backup_dir=target, auth_database=auth, log=_say, backup_when_current=True)
        )


def _upgrade_database(
    uri: str | None, backup_dir: Path | None, rds_instance: str | None, auth_database: str | None, dry_run: bool
) -> None:
    from ..database.connection import shown
    from ..database.upgrade import PgDumps, RdsSnapshot, StoppedByOperator, coordinated_upgrade, operator_restore_prefix

    if not uri:
        raise fail("no database: pass --backend-store-uri (as the schema owner, password via PGPASSWORD), or --local")
    if (backup_dir is None) == (rds_instance is None):
        raise fail(
            "db upgrade needs one backup target: --backup-dir D (pg_dump) or --rds-instance ID (an RDS snapshot)"
        )
    if rds_instance:
        backup, target = RdsSnapshot(rds_instance), f"an RDS snapshot of {rds_instance}"
    else:
        backup = PgDumps.of(uri, auth_database, backup_dir, operator_restore_prefix(uri))
        target = f"a pg_dump of each database to {backup_dir}"
    schemas = f"{shown(uri)}" + (f" and its auth database {auth_database}" if auth_database else "")
    actions = [
        f"take {target}, always, even when the schema is current",
        f"migrate {schemas} if behind this MLflow, then verify revisions and row counts "
        "(the writers must be stopped by you)",
    ]
    print_actions("db upgrade", actions, dry_run)
    if not dry_run:
        writers = StoppedByOperator()
        _run_upgrade(
            lambda: coordinated_upgrade(uri, auth_database, writers, backup, log=_say, backup_when_current=True)
        )


def _run_upgrade(run: Callable) -> None:
    from ..database.revisions import UPGRADE

    try:
        outcome = run()
    except (RunbookError, PlatformError, UpgradeError) as exc:
        raise fail(str(exc)) from None
    except psycopg.Error as exc:
        raise fail(f"cannot read the database: {first_line(exc)}; check the URI and PGPASSWORD") from None
    backups = ", ".join(outcome.backups)
    if outcome.action != UPGRADE:
        kept = f"nothing to migrate (the schema is {outcome.action}); the writers kept running"
        _say(f"{kept}; backup taken anyway: {escape(backups)}")
        return
    seconds = f"{outcome.stopped_seconds:.1f}"
    _say(f"[bold green]upgraded[/] (writes stopped {seconds} s); backups: {escape(backups)}")


# -- restores ------------------------------------------------------------------------------------------


@app.command("restore", rich_help_panel=RUNBOOKS)
def restore_command(
    backup: Annotated[Path | None, typer.Option(help="A pg_dump file written by `db upgrade`.")] = None,
    snapshot: Annotated[str | None, typer.Option(help="An RDS snapshot (e.g. the one a failed upgrade names).")] = None,
    rds_instance: Annotated[str | None, typer.Option(help="With --snapshot: the instance to put it back on.")] = None,
    auth_database: Annotated[
        str, typer.Option(help="The basic-auth database, restored too from a snapshot.")
    ] = AUTH_DATABASE,
    restored_endpoint: Annotated[
        str | None,
        typer.Option(
            help="With --snapshot: HOST:PORT reaching the temporary instance (a tunnel), not its RDS address."
        ),
    ] = None,
    backend_store_uri: BackendStoreUri = None,
    dry_run: DryRun = False,
    local: Local = False,
) -> None:
    """Replace databases with a backup. Destructive: everything written since the backup is gone.
    With --backup, the database the dump was taken from; with --snapshot, the tracking and auth
    databases as they were in the snapshot (restored to a temporary instance, copied over, then
    deleted), so the instance Pulumi manages stays. With --local the tracking server is stopped
    first; elsewhere the writers must be stopped (a failed upgrade leaves them stopped).

    Example:
      mlflow-platform db restore --snapshot \\
        mlflow-prod-upgrade-3-10-1-to-3-17-2-… --rds-instance mlflow-prod
    """
    if (backup is None) == (snapshot is None):
        raise fail("give one of --backup (a pg_dump file) or --snapshot (an RDS snapshot)")
    uri = database_uri(backend_store_uri, local)
    if snapshot:
        _restore_snapshot(uri, snapshot, rds_instance, auth_database, restored_endpoint, dry_run)
    else:
        _restore_dump(uri, backup, local, dry_run)


def _restore_dump(uri: str, backup: Path, local: bool, dry_run: bool) -> None:
    from ..database.backup import dump_database_name, restore_database, side_name

    target = dump_database_name(backup)
    actions = [f"pg_restore {backup} into {side_name(target, 'restoring')}", f"when complete, replace {target} with it"]
    print_actions("db restore", (["stop the local tracking server"] if local else []) + actions, dry_run)
    if dry_run:
        return
    if local:  # no writer while the database is replaced
        local_platform().stop_tracking(log=out.print)
    try:
        restored = restore_database(uri, backup)
    except RunbookError as exc:
        raise fail(str(exc)) from None
    except psycopg.Error as exc:
        raise fail(f"db restore: cannot reach the database: {first_line(exc)}; check the URI and PGPASSWORD") from None
    out.print(f"[bold green]restored[/] {escape(restored)} from {escape(str(backup))}", highlight=False)
    if local:
        out.print("start the server again with `mlflow-platform local up`")


def _restore_snapshot(
    uri: str, snapshot: str, instance: str | None, auth_database: str, endpoint: str | None, dry_run: bool
) -> None:
    from sqlalchemy.engine import make_url

    from ..database.backup import restore_from_snapshot, side_name

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
    actions += [
        f"copy {d} from it into {side_name(d, 'restoring')} on {instance}, then replace {d} with it" for d in databases
    ]
    actions += ["delete the temporary instance"]
    print_actions("db restore", actions, dry_run)
    if dry_run:
        return
    try:
        restored = restore_from_snapshot(uri, snapshot, instance, databases, endpoint=tunnel, log=out.print)
    except RunbookError as exc:
        raise fail(str(exc)) from None
    except psycopg.Error as exc:
        raise fail(f"db restore: cannot reach a database: {first_line(exc)}; check the URI and PGPASSWORD") from None
    out.print(f"[bold green]restored[/] {', '.join(restored)} from {escape(snapshot)}", highlight=False)
    out.print("then: `mlflow-platform db clear-failed-upgrade --namespace <ns>`, revert the MLflow bump, `pulumi up`")


# -- the restore drill ---------------------------------------------------------------------------------


@app.command("restore-drill", rich_help_panel=RUNBOOKS)
def restore_drill_command(
    backend_store_uri: BackendStoreUri = None,
    backup_dir: BackupDir = None,
    auth_database: Annotated[
        str | None,
        typer.Option(
            help="Drill this auth database's newest dump too; its absence then fails the drill "
            f"\\[default: the platform's with --local, else {AUTH_DATABASE}, skipped when it has no dump]."
        ),
    ] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the scratch databases.")] = False,
    local: Local = False,
) -> None:
    """Restore the newest tracking dump and the newest auth dump in --backup-dir, each into a
    scratch database of its own, and check that active runs, model versions and champion aliases
    resolve there as in the source, and that basic-auth's users and grants are the source's.

    Example:
      mlflow-platform db restore-drill --local
    """
    from ..database.drill import restore_drill

    platform = local_platform() if local else None
    uri = platform.database_uri() if platform else database_uri(backend_store_uri, local=False)
    backup_dir = backup_dir or (platform.backup_dir if platform else None)
    if backup_dir is None:
        raise fail("pass --backup-dir (where `db upgrade` wrote its dumps), or --local")
    auth = auth_database or (platform.config.database.auth_database if platform else AUTH_DATABASE)
    try:
        report = restore_drill(uri, backup_dir, auth_database=auth, require_auth=auth_database is not None, keep=keep)
    except RunbookError as exc:
        raise fail(str(exc)) from None
    _print_drill(report)
    if not report.passed:
        raise fail("restore drill failed: " + "; ".join(report.problems))
    out.print("[bold green]restore drill passed[/]")


def _print_drill(report) -> None:
    table = Table("", "source", "restored", title="restore drill")
    rows = [("active runs", report.runs), ("model versions", report.model_versions)]
    rows += [(f"{name}@champion", (f"v{a}", f"v{b}")) for name, (a, b) in report.champions.items()]
    if report.auth:
        rows += [("auth users", report.auth.users), *((f"auth {n}", c) for n, c in report.auth.grants.items())]
    for label, compared in rows:
        if compared is not None:
            table.add_row(escape(label), *map(str, compared))
    if table.row_count:
        out.print(table)
    for line in report.restored:
        _say(f"restored  {escape(line)}")
    for note in report.notes:
        _say(f"note      {escape(note)}")
