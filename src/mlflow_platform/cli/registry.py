"""Model registry runbooks: gate, promote under a lock, roll back."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import RunbookError
from .connect import mlflow_client
from .options import DryRun, Local, Lock, TrackingUri, Workspace
from .output import fail, out, print_actions

PANEL = "Runbooks"
app = typer.Typer()


@app.command("validate", rich_help_panel=PANEL)
def validate_command(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Registered model name.")],
    metric: Annotated[str, typer.Option(help="Run metric the gate reads (e.g. val_ndcg_at_10).")],
    threshold: Annotated[float | None, typer.Option(help="Absolute floor (ceiling with --lower-is-better).")] = None,
    max_regression: Annotated[float, typer.Option(help="Allowed relative regression vs @champion.")] = 0.02,
    lower_is_better: Annotated[bool, typer.Option("--lower-is-better", help="For losses and errors.")] = False,
    alias: Annotated[str, typer.Option(help="Candidate alias.")] = "challenger",
    version: Annotated[str | None, typer.Option(help="Candidate version (instead of the alias).")] = None,
    tracking_uri: TrackingUri = None,
    local: Local = False,
    workspace: Workspace = None,
) -> None:
    """Gate a candidate: exit 0 if it passes, 1 if not (for CI).

    Example:
      mlflow-platform validate search-ranker --metric val_ndcg_at_10 \\
        --threshold 0.82
    """
    from ..runbooks.registry import validate

    client = mlflow_client(tracking_uri, local, workspace)
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
        raise fail(str(exc)) from None
    table = Table("", "version", metric)
    table.add_row("candidate", gate.candidate, f"{gate.candidate_value:.6g}")
    if gate.champion:
        table.add_row("champion", gate.champion, f"{gate.champion_value:.6g}")
    out.print(table)
    for line in gate.arithmetic:
        out.print(f"  {escape(line)}", highlight=False)
    if not gate.passed:
        raise fail("gate failed: " + "; ".join(gate.reasons))
    out.print(f"[bold green]PASS[/] {escape(model)} v{gate.candidate}")


@app.command("promote", rich_help_panel=PANEL)
def promote_command(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Registered model name.")],
    metric: Annotated[str, typer.Option(help="Run metric the gate reads.")],
    lock: Lock = None,
    threshold: Annotated[float | None, typer.Option(help="Absolute floor for the metric.")] = None,
    max_regression: Annotated[float, typer.Option(help="Allowed relative regression vs @champion.")] = 0.02,
    lower_is_better: Annotated[
        bool, typer.Option("--lower-is-better", help="For losses and errors: the gate wants lower values.")
    ] = False,
    alias: Annotated[str, typer.Option(help="Candidate alias.")] = "challenger",
    version: Annotated[str | None, typer.Option(help="Candidate version (instead of the alias).")] = None,
    approved_by: Annotated[str | None, typer.Option(help="Who approves \\[default: CI actor or user].")] = None,
    lock_timeout: Annotated[float, typer.Option(help="Seconds to wait for the lock.")] = 30.0,
    dry_run: DryRun = False,
    tracking_uri: TrackingUri = None,
    local: Local = False,
    workspace: Workspace = None,
) -> None:
    """Gate the candidate, then under the lock: old champion -> previous-champion, candidate ->
    champion, approval tags (who, when, gate figures, source commit). Re-running is a no-op.

    Example:
      mlflow-platform promote search-ranker --metric val_ndcg_at_10 \\
        --threshold 0.82 --lock dynamodb://mlflow-locks
    """
    from ..runbooks.registry import promote

    client = mlflow_client(tracking_uri, local, workspace)
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
        raise fail(str(exc)) from None
    print_actions(f"promote {model}", change.actions, dry_run and not change.actions[0].endswith("nothing to do"))


@app.command("rollback", rich_help_panel=PANEL)
def rollback_command(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Registered model name.")],
    reason: Annotated[str, typer.Option(help="Why (kept as a tag on the rolled-back version).")],
    lock: Lock = None,
    lock_timeout: Annotated[float, typer.Option(help="Seconds to wait for the lock.")] = 30.0,
    dry_run: DryRun = False,
    tracking_uri: TrackingUri = None,
    local: Local = False,
    workspace: Workspace = None,
) -> None:
    """Point champion back at previous-champion; the bad version gets @rolled-back and the reason.

    Example:
      mlflow-platform rollback search-ranker --reason "ndcg dropped in prod" \\
        --lock redis://redis:6379/0
    """
    from ..runbooks.registry import rollback

    client = mlflow_client(tracking_uri, local, workspace)
    try:
        change = rollback(client, model, reason=reason, lock_url=lock, dry_run=dry_run, lock_timeout=lock_timeout)
    except RunbookError as exc:
        raise fail(str(exc)) from None
    print_actions(f"rollback {model}", change.actions, dry_run)


@app.command("prune-models", rich_help_panel=PANEL)
def prune_models_command(
    older_than_days: Annotated[
        float, typer.Option(help="Untouched this long: neither the model nor any version updated.")
    ] = 180.0,
    filter_string: Annotated[
        str | None, typer.Option("--filter", help="MLflow's registered-model filter, e.g. \"name LIKE 'tmp-%'\".")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run/--execute", help="Dry run unless --execute.")] = True,
    tracking_uri: TrackingUri = None,
    local: Local = False,
    workspace: Workspace = None,
) -> None:
    """Delete registered models nobody uses: no alias, no version in Staging or Production, no
    keep=true tag, nothing updated for --older-than-days. Dry run by default; the runs and
    artifacts behind their versions stay (cleanup-runs and gc decide those).

    Example:
      mlflow-platform prune-models --older-than-days 180 --execute
    """
    from mlflow.exceptions import MlflowException

    from ..runbooks.models import prune_unused_models

    client = mlflow_client(tracking_uri, local, workspace)
    try:
        result = prune_unused_models(
            client, older_than_days=older_than_days, filter_string=filter_string, dry_run=dry_run
        )
    except MlflowException as exc:
        raise fail(f"prune-models: {exc.message}") from None
    table = Table("", "count", title="prune-models" + (" (dry run)" if dry_run else ""))
    table.add_row("registered models examined", str(result.examined))
    for reason, count in sorted(result.kept.items()):
        table.add_row(f"kept: {reason}", str(count))
    table.add_row("unused" if dry_run else "deleted", str(len(result.unused) if dry_run else result.deleted))
    out.print(table)
    for name in result.unused[:50]:
        out.print(f"  {escape(name)}", highlight=False)
    if dry_run and result.unused:
        out.print("dry run: nothing was deleted; run again with --execute to delete them")
