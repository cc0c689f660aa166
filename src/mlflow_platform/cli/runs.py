"""Run hygiene runbooks: reap stuck runs, clean up, purge, audit."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..errors import RunbookError
from .connect import database_uri, each_workspace, in_workspace, local_platform, mlflow_client
from .options import AllWorkspaces, DryRun, ExperimentIds, Experiments, Local, TrackingUri, Workspace
from .output import err, fail, out

PANEL = "Runbooks"
app = typer.Typer()


@app.command("reap-stuck-runs", rich_help_panel=PANEL)
def reap_stuck_runs_command(
    older_than_hours: Annotated[float, typer.Option(help="RUNNING longer than this is stuck.")] = 24.0,
    status: Annotated[str, typer.Option(help="End state: FAILED or KILLED.")] = "FAILED",
    experiment: Experiments = None,
    experiment_id: ExperimentIds = None,
    dry_run: DryRun = False,
    tracking_uri: TrackingUri = None,
    local: Local = False,
    workspace: Workspace = None,
    all_workspaces: AllWorkspaces = False,
) -> None:
    """Terminate runs whose process died while RUNNING (all pages, all chosen experiments).

    Example:
      mlflow-platform reap-stuck-runs --older-than-hours 24 --status KILLED \\
        -e "/search-team/*"
    """
    if status not in ("FAILED", "KILLED"):
        raise fail("--status must be FAILED or KILLED")
    client = mlflow_client(tracking_uri, local)
    for name in each_workspace(client, workspace, all_workspaces):
        with in_workspace(name):
            _announce(name)
            _reap(client, older_than_hours, status, experiment, experiment_id, dry_run)


def _announce(workspace: str | None) -> None:
    if workspace:
        out.print(f"[bold]workspace {escape(workspace)}[/]")


def _reap(client, older_than_hours, status, experiment, experiment_id, dry_run) -> None:
    from ..runbooks.runs import reap_stuck_runs

    report = reap_stuck_runs(
        client,
        older_than_hours=older_than_hours,
        status=status,
        experiment_names=experiment,
        experiment_ids=experiment_id,
        dry_run=dry_run,
    )
    verb = "would terminate" if dry_run else f"terminated as {status}"
    out.print(f"{len(report.selected)} stuck run(s) in {report.experiments} experiment(s): {verb}")
    for run_id in report.selected[:50]:
        out.print(f"  {run_id}")


@app.command("cleanup-runs", rich_help_panel=PANEL)
def cleanup_runs_command(
    older_than_days: Annotated[float, typer.Option(help="Delete finished runs that ended before this.")] = 90.0,
    experiment: Experiments = None,
    experiment_id: ExperimentIds = None,
    dry_run: Annotated[bool, typer.Option("--dry-run/--execute", help="Dry run unless --execute.")] = True,
    workers: Annotated[int, typer.Option(help="Parallel delete requests.")] = 8,
    tracking_uri: TrackingUri = None,
    local: Local = False,
    workspace: Workspace = None,
    all_workspaces: AllWorkspaces = False,
) -> None:
    """Soft-delete old finished runs; never keep=true runs nor runs backing a model version
    (asked of the registry). Dry run by default; `gc` purges what was deleted.

    Example:
      mlflow-platform cleanup-runs --older-than-days 60 -e "/search-team/*" \\
        --execute
    """
    client = mlflow_client(tracking_uri, local)
    for name in each_workspace(client, workspace, all_workspaces):
        with in_workspace(name):
            _announce(name)
            _cleanup(client, older_than_days, experiment, experiment_id, dry_run, workers)


def _cleanup(client, older_than_days, experiment, experiment_id, dry_run, workers) -> None:
    from ..runbooks.runs import cleanup_runs

    with Progress(
        TextColumn("deleting"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=dry_run,
    ) as progress:
        task = progress.add_task("delete", total=None)

        def advance(n: int) -> None:
            progress.advance(task, n)

        report = cleanup_runs(
            client,
            older_than_days=older_than_days,
            experiment_names=experiment,
            experiment_ids=experiment_id,
            dry_run=dry_run,
            workers=workers,
            progress=advance,
        )
    import datetime as dt

    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=older_than_days)
    table = Table("", "count", title="cleanup-runs" + (" (dry run)" if dry_run else ""))
    table.add_row("experiments searched", str(report.experiments))
    table.add_row(f"runs finished before {cutoff:%Y-%m-%d %H:%M} UTC", str(report.examined))
    for reason, count in sorted(report.spared.items()):
        table.add_row(f"spared: {reason}", str(count))
    table.add_row(
        "runs that would be deleted" if dry_run else "runs deleted",
        str(len(report.selected) if dry_run else report.changed),
    )
    out.print(table)
    if dry_run and report.selected:
        out.print("dry run: nothing was deleted; run again with --execute to delete them (then `gc` purges)")


@app.command("gc", rich_help_panel=PANEL)
def gc_command(
    older_than: Annotated[str, typer.Option(help="Purge runs deleted this long ago (30d, 12h).")] = "30d",
    backend_store_uri: Annotated[
        str | None,
        typer.Option(envvar="MLFLOW_BACKEND_STORE_URI", help="Tracking database (password via PGPASSWORD)."),
    ] = None,
    dry_run: DryRun = False,
    tracking_uri: TrackingUri = None,
    local: Local = False,
    workspace: Workspace = None,
    all_workspaces: AllWorkspaces = False,
) -> None:
    """`mlflow gc` with the tracking URI and credentials set, so artifacts of deleted runs are
    purged through the proxy too.

    Example:
      mlflow-platform gc --older-than 30d --backend-store-uri \\
        postgresql+psycopg://mlflow@db/mlflow
    """
    from ..runbooks.gc import gc

    client = mlflow_client(tracking_uri, local)
    store = database_uri(backend_store_uri, local)
    for name in each_workspace(client, workspace, all_workspaces):
        with in_workspace(name):
            _announce(name)
            try:
                report = gc(
                    backend_store_uri=store,
                    tracking_uri=os.environ["MLFLOW_TRACKING_URI"],
                    older_than=older_than,
                    dry_run=dry_run,
                )
            except RunbookError as exc:
                raise fail(str(exc)) from None
            verb = "would purge" if dry_run else "purged"
            out.print(f"{verb} {len(report.candidates)} deleted run(s) older than {older_than}, with their artifacts")


@app.command("audit", rich_help_panel=PANEL)
def audit_command(
    experiment: Experiments = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 when anything is found.")] = False,
    tracking_uri: TrackingUri = None,
    local: Local = False,
    workspace: Workspace = None,
    all_workspaces: AllWorkspaces = False,
) -> None:
    """Report naming and metadata problems: experiment names, run tags, model names, version
    tags, aliases pointing at deleted versions.

    Example:
      mlflow-platform audit -e "/search-team/*" --strict
    """
    from ..runbooks.audit import audit

    client = mlflow_client(tracking_uri, local)
    found = 0
    for name in each_workspace(client, workspace, all_workspaces):
        with in_workspace(name):
            findings = audit(client, experiment_names=experiment)
        title = f"audit{f' of workspace {name}' if name else ''}: {len(findings)} finding(s)"
        table = Table("kind", "subject", "detail", title=escape(title))
        for finding in findings:
            table.add_row(finding.kind, escape(finding.subject), escape(finding.detail))
        out.print(table)
        found += len(findings)
    if strict and found:
        raise typer.Exit(code=1)


def _gb(usage) -> str:
    return f"{usage.bytes / 1e9:,.3f}"


@app.command("storage-report", rich_help_panel=PANEL)
def storage_report_command(
    bucket: Annotated[str | None, typer.Option(help="The artifact bucket (the stack's artifacts.bucket).")] = None,
    prefix: Annotated[
        str,
        typer.Option(help="The artifact prefix (the stack's artifacts.prefix).", show_default="the bucket's root"),
    ] = "",
    top: Annotated[int, typer.Option(help="Experiments to list, largest first.")] = 20,
    local: Local = False,
) -> None:
    """Where the artifact store's bytes are: per workspace, per experiment and per storage class
    (the lifecycle rules move objects between classes). One listing of the prefix; AWS
    credentials from the environment.

    Example:
      mlflow-platform storage-report --bucket acme-mlflow-prod --prefix prod
    """
    from botocore.exceptions import BotoCoreError, ClientError

    from ..runbooks.storage import storage_report

    if local:
        platform = local_platform()
        s3, bucket, prefix = platform.s3_client(), platform.bucket, platform.config.artifacts.prefix
    elif not bucket:
        raise fail("pass --bucket (and --prefix) of the artifact store, or --local")
    else:
        import boto3

        s3 = boto3.client("s3")
    try:
        report = storage_report(s3, bucket, prefix)
    except (BotoCoreError, ClientError) as exc:  # they name the refusal (AccessDenied, NoSuchBucket)
        raise fail(f"storage-report: listing s3://{bucket}/{prefix} failed: {exc}") from None
    out.print(f"s3://{escape(bucket)}/{escape(prefix)}: {report.total.objects:,} objects, {_gb(report.total)} GB")
    for title, rows in (
        ("by workspace", sorted(report.by_workspace.items())),
        ("by storage class", sorted(report.by_class.items())),
        (f"largest {top} experiments", [(f"{w}/{e}", u) for (w, e), u in report.top_experiments(top)]),
    ):
        table = Table("", "objects", "GB", title=title)
        for name, usage in rows:
            table.add_row(escape(str(name)), f"{usage.objects:,}", _gb(usage))
        out.print(table)
