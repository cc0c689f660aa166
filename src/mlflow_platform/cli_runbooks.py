"""The runbook commands of `mlflow-platform`: validate, promote, rollback, reap-stuck-runs,
cleanup-runs, gc, audit, db-upgrade, restore-drill."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .runbooks import RunbookError

out = Console()
err = Console(stderr=True)

TrackingUri = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        envvar="MLFLOW_TRACKING_URI",
        rich_help_panel="Connection",
        help="Tracking server; credentials from MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD.",
    ),
]
Local = Annotated[
    bool,
    typer.Option("--local", rich_help_panel="Connection", help="Use the local platform (URI, credentials, database)."),
]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Say what would change; change nothing.")]
Lock = Annotated[
    str | None,
    typer.Option("--lock", envvar="MLFLOW_PLATFORM_LOCK", help="redis://host:port/db or dynamodb://<table>."),
]
Experiments = Annotated[
    list[str] | None,
    typer.Option("--experiment", "-e", help="Experiment name or glob (/search-team/*); repeatable. Default: all."),
]
ExperimentIds = Annotated[list[str] | None, typer.Option("--experiment-id", help="Experiment id; repeatable.")]


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


def _local_platform():
    from .local.platform import open_platform
    from .local.processes import PlatformError

    try:
        platform = open_platform()
        platform.secret_values()  # a missing or corrupt secrets file is a one-line error here
    except PlatformError as exc:
        raise _fail(str(exc)) from None
    if not platform.started_before:
        raise _fail(
            f"no local platform in {platform.state_dir}; start one with `mlflow-platform local up`, "
            "or set MLFLOW_PLATFORM_STATE_DIR"
        )
    return platform


def _client(tracking_uri: str | None, local: bool):
    from mlflow import MlflowClient

    if local:
        for key, value in _local_platform().client_env().items():
            if key.startswith("MLFLOW_TRACKING_"):
                os.environ[key] = value
        tracking_uri = os.environ["MLFLOW_TRACKING_URI"]
    if not tracking_uri:
        raise _fail("no tracking server: pass --tracking-uri (or set MLFLOW_TRACKING_URI), or --local")
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _database(backend_store_uri: str | None, local: bool) -> str:
    if local:
        return _local_platform().database_uri()
    if not backend_store_uri:
        raise _fail("no database: pass --backend-store-uri (password via PGPASSWORD), or --local")
    return backend_store_uri


def _print_actions(title: str, actions: list[str], dry_run: bool) -> None:
    prefix = "[yellow]would[/] " if dry_run else ""
    out.print(f"[bold]{escape(title)}[/]")
    for action in actions:
        out.print(f"  {prefix}{escape(action)}", highlight=False)


def register(app: typer.Typer) -> None:
    panel = "Runbooks"

    @app.command("validate", rich_help_panel=panel)
    def validate_cmd(
        model: Annotated[str, typer.Argument(help="Registered model name.")],
        metric: Annotated[str, typer.Option(help="Run metric the gate reads (e.g. val_ndcg_at_10).")],
        threshold: Annotated[
            float | None, typer.Option(help="Absolute floor (ceiling with --lower-is-better).")
        ] = None,
        max_regression: Annotated[float, typer.Option(help="Allowed relative regression vs @champion.")] = 0.02,
        lower_is_better: Annotated[bool, typer.Option("--lower-is-better", help="For losses and errors.")] = False,
        alias: Annotated[str, typer.Option(help="Candidate alias.")] = "challenger",
        version: Annotated[str | None, typer.Option(help="Candidate version (instead of the alias).")] = None,
        tracking_uri: TrackingUri = None,
        local: Local = False,
    ) -> None:
        """Gate a candidate: exit 0 if it passes, 1 if not (for CI).

        Example: mlflow-platform validate search-ranker --metric val_ndcg_at_10 --threshold 0.82
        """
        from .runbooks.registry import validate

        client = _client(tracking_uri, local)
        try:
            gate = validate(
                client,
                model,
                metric,
                threshold=threshold,
                max_regression=max_regression,
                higher_is_better=not lower_is_better,
                alias=alias,
                version=version,
            )
        except RunbookError as exc:
            raise _fail(str(exc)) from None
        table = Table("", "version", metric)
        table.add_row("candidate", gate.candidate, f"{gate.candidate_value:.6g}")
        if gate.champion:
            table.add_row("champion", gate.champion, f"{gate.champion_value:.6g}")
        out.print(table)
        if not gate.passed:
            raise _fail("gate failed: " + "; ".join(gate.reasons))
        out.print(f"[bold green]PASS[/] {escape(model)} v{gate.candidate}")

    @app.command("promote", rich_help_panel=panel)
    def promote_cmd(
        model: Annotated[str, typer.Argument(help="Registered model name.")],
        metric: Annotated[str, typer.Option(help="Run metric the gate reads.")],
        lock: Lock = None,
        threshold: Annotated[float | None, typer.Option(help="Absolute floor for the metric.")] = None,
        max_regression: Annotated[float, typer.Option(help="Allowed relative regression vs @champion.")] = 0.02,
        lower_is_better: Annotated[bool, typer.Option("--lower-is-better")] = False,
        alias: Annotated[str, typer.Option(help="Candidate alias.")] = "challenger",
        version: Annotated[str | None, typer.Option(help="Candidate version (instead of the alias).")] = None,
        approved_by: Annotated[str | None, typer.Option(help="Who approves [default: CI actor or user].")] = None,
        lock_timeout: Annotated[float, typer.Option(help="Seconds to wait for the lock.")] = 30.0,
        dry_run: DryRun = False,
        tracking_uri: TrackingUri = None,
        local: Local = False,
    ) -> None:
        """Gate the candidate, then under the lock: old champion -> previous-champion, candidate ->
        champion, approval tags (who, when, gate figures, source commit). Re-running is a no-op.

        Example: mlflow-platform promote search-ranker --metric val_ndcg_at_10 --threshold 0.82 --lock dynamodb://mlflow-locks
        """
        from .runbooks.registry import promote

        client = _client(tracking_uri, local)
        try:
            change, _ = promote(
                client,
                model,
                metric,
                lock_url=lock,
                threshold=threshold,
                max_regression=max_regression,
                higher_is_better=not lower_is_better,
                alias=alias,
                version=version,
                approved_by=approved_by,
                dry_run=dry_run,
                lock_timeout=lock_timeout,
            )
        except RunbookError as exc:
            raise _fail(str(exc)) from None
        _print_actions(f"promote {model}", change.actions, dry_run and not change.actions[0].endswith("nothing to do"))

    @app.command("rollback", rich_help_panel=panel)
    def rollback_cmd(
        model: Annotated[str, typer.Argument(help="Registered model name.")],
        reason: Annotated[str, typer.Option(help="Why (kept as a tag on the rolled-back version).")],
        lock: Lock = None,
        lock_timeout: Annotated[float, typer.Option(help="Seconds to wait for the lock.")] = 30.0,
        dry_run: DryRun = False,
        tracking_uri: TrackingUri = None,
        local: Local = False,
    ) -> None:
        """Point champion back at previous-champion; the bad version gets @rolled-back and the reason.

        Example: mlflow-platform rollback search-ranker --reason "ndcg dropped in prod" --lock redis://redis:6379/0
        """
        from .runbooks.registry import rollback

        client = _client(tracking_uri, local)
        try:
            change = rollback(client, model, reason=reason, lock_url=lock, dry_run=dry_run, lock_timeout=lock_timeout)
        except RunbookError as exc:
            raise _fail(str(exc)) from None
        _print_actions(f"rollback {model}", change.actions, dry_run)

    @app.command("reap-stuck-runs", rich_help_panel=panel)
    def reap_cmd(
        older_than_hours: Annotated[float, typer.Option(help="RUNNING longer than this is stuck.")] = 24.0,
        status: Annotated[str, typer.Option(help="End state: FAILED or KILLED.")] = "FAILED",
        experiment: Experiments = None,
        experiment_id: ExperimentIds = None,
        dry_run: DryRun = False,
        tracking_uri: TrackingUri = None,
        local: Local = False,
    ) -> None:
        """Terminate runs whose process died while RUNNING (all pages, all chosen experiments).

        Example: mlflow-platform reap-stuck-runs --older-than-hours 24 --status KILLED -e "/search-team/*"
        """
        from .runbooks.runs import reap_stuck_runs

        if status not in ("FAILED", "KILLED"):
            raise _fail("--status must be FAILED or KILLED")
        client = _client(tracking_uri, local)
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

    @app.command("cleanup-runs", rich_help_panel=panel)
    def cleanup_cmd(
        older_than_days: Annotated[float, typer.Option(help="Delete finished runs that ended before this.")] = 90.0,
        experiment: Experiments = None,
        experiment_id: ExperimentIds = None,
        dry_run: Annotated[bool, typer.Option("--dry-run/--execute", help="Dry run unless --execute.")] = True,
        workers: Annotated[int, typer.Option(help="Parallel delete requests.")] = 8,
        tracking_uri: TrackingUri = None,
        local: Local = False,
    ) -> None:
        """Soft-delete old finished runs; never keep=true runs nor runs backing a model version
        (asked of the registry). Dry run by default; `gc` purges what was deleted.

        Example: mlflow-platform cleanup-runs --older-than-days 60 -e "/search-team/*" --execute
        """
        from .runbooks.runs import cleanup_runs

        client = _client(tracking_uri, local)
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
        table = Table("", "runs", title="cleanup-runs" + (" (dry run)" if dry_run else ""))
        table.add_row("experiments", str(report.experiments))
        table.add_row("finished before cutoff", str(report.examined))
        for reason, count in sorted(report.spared.items()):
            table.add_row(f"spared: {reason}", str(count))
        table.add_row(
            "would delete" if dry_run else "deleted", str(len(report.selected) if dry_run else report.changed)
        )
        out.print(table)

    @app.command("gc", rich_help_panel=panel)
    def gc_cmd(
        older_than: Annotated[str, typer.Option(help="Purge runs deleted this long ago (30d, 12h).")] = "30d",
        backend_store_uri: Annotated[
            str | None,
            typer.Option(envvar="MLFLOW_BACKEND_STORE_URI", help="Tracking database (password via PGPASSWORD)."),
        ] = None,
        dry_run: DryRun = False,
        tracking_uri: TrackingUri = None,
        local: Local = False,
    ) -> None:
        """`mlflow gc` with the tracking URI and credentials set, so artifacts of deleted runs are
        purged through the proxy too.

        Example: mlflow-platform gc --older-than 30d --backend-store-uri postgresql+psycopg://mlflow@db/mlflow
        """
        from .runbooks.gc import gc

        client = _client(tracking_uri, local)
        try:
            report = gc(
                client,
                backend_store_uri=_database(backend_store_uri, local),
                tracking_uri=os.environ["MLFLOW_TRACKING_URI"],
                older_than=older_than,
                dry_run=dry_run,
            )
        except RunbookError as exc:
            raise _fail(str(exc)) from None
        verb = "would purge" if dry_run else "purged"
        out.print(f"{verb} {len(report.candidates)} deleted run(s) older than {older_than}, with their artifacts")

    @app.command("audit", rich_help_panel=panel)
    def audit_cmd(
        experiment: Experiments = None,
        strict: Annotated[bool, typer.Option("--strict", help="Exit 1 when anything is found.")] = False,
        tracking_uri: TrackingUri = None,
        local: Local = False,
    ) -> None:
        """Report naming and metadata problems: experiment names, run tags, model names, version
        tags, aliases pointing at deleted versions.

        Example: mlflow-platform audit -e "/search-team/*" --strict
        """
        from .runbooks.audit import audit

        findings = audit(_client(tracking_uri, local), experiment_names=experiment)
        table = Table("kind", "subject", "detail", title=f"audit: {len(findings)} finding(s)")
        for finding in findings:
            table.add_row(finding.kind, escape(finding.subject), escape(finding.detail))
        out.print(table)
        if strict and findings:
            raise typer.Exit(code=1)

    @app.command("db-upgrade", rich_help_panel=panel)
    def db_upgrade_cmd(
        backend_store_uri: Annotated[
            str | None,
            typer.Option(envvar="MLFLOW_BACKEND_STORE_URI", help="Tracking database (password via PGPASSWORD)."),
        ] = None,
        backup_dir: Annotated[Path | None, typer.Option(help="pg_dump target directory.")] = None,
        rds_instance: Annotated[
            str | None, typer.Option(help="Take an RDS snapshot of this instance instead.")
        ] = None,
        dry_run: DryRun = False,
        local: Local = False,
    ) -> None:
        """Back up (pg_dump locally, an RDS snapshot on AWS), then `mlflow db upgrade`; no backup,
        no upgrade.

        Example: mlflow-platform db-upgrade --local   |   mlflow-platform db-upgrade --rds-instance mlflow-prod
        """
        from .runbooks.database import db_upgrade

        uri = _database(backend_store_uri, local)
        if local and backup_dir is None and rds_instance is None:
            backup_dir = _local_platform().backup_dir
        try:
            report = db_upgrade(uri, backup_dir=backup_dir, rds_instance=rds_instance, dry_run=dry_run)
        except RunbookError as exc:
            raise _fail(str(exc) + "; the schema was not touched") from None
        _print_actions("db-upgrade", report.actions, dry_run)
        if report.upgraded:
            out.print(f"[bold green]upgraded[/] after backup {escape(str(report.backup))}")

    @app.command("restore-drill", rich_help_panel=panel)
    def restore_drill_cmd(
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

        Example: mlflow-platform restore-drill --local
        """
        from .runbooks.database import restore_drill

        uri = _database(backend_store_uri, local)
        backup_dir = backup_dir or (_local_platform().backup_dir if local else None)
        if backup_dir is None:
            raise _fail("pass --backup-dir (or --local)")
        try:
            report = restore_drill(uri, backup_dir, keep=keep)
        except RunbookError as exc:
            raise _fail(str(exc)) from None
        table = Table("", "source", "restored", title=f"restore drill of {Path(report.backup).name}")
        table.add_row("active runs", str(report.runs[0]), str(report.runs[1]))
        table.add_row("model versions", str(report.model_versions[0]), str(report.model_versions[1]))
        for name, (source, restored) in report.champions.items():
            table.add_row(f"{escape(name)}@champion", f"v{source}", f"v{restored}")
        out.print(table)
        if not report.passed:
            raise _fail("restore drill failed: " + "; ".join(report.problems))
        out.print("[bold green]restore drill passed[/]")


def register_admin(app: typer.Typer) -> None:
    @app.command("ensure-user", rich_help_panel="Runbooks")
    def ensure_user_cmd(
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

        Example: MLFLOW_PLATFORM_USER_PASSWORD=... mlflow-platform ensure-user --username mlflow-ops --admin
        """
        from mlflow.exceptions import MlflowException
        from mlflow.server.auth.client import AuthServiceClient

        password = os.environ.get(password_env)
        if not password:
            raise _fail(f"set {password_env} to the user's password")
        _client(tracking_uri, local)
        auth = AuthServiceClient(os.environ["MLFLOW_TRACKING_URI"])
        try:
            auth.get_user(username)
        except MlflowException as exc:  # only "no such user" means create; anything else is an error
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise _fail(f"cannot look up user {username}: {exc.message}") from None
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
