"""`mlflow-platform db …`: the schema steps the deploy's Jobs run, before and after the rollout."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from ..server_spec import APP_DB_PASSWORD_ENV
from .options import DryRun
from .output import fail, out, print_actions

app = typer.Typer(help="Database schema steps (run by the deploy's migration and release Jobs).", no_args_is_help=True)

Namespace = Annotated[
    str | None, typer.Option(help="Coordinate the writers in this namespace (in-cluster credentials).")
]
Deployments = Annotated[list[str] | None, typer.Option("--deployment", help="A writer Deployment (repeatable).")]
CronJobs = Annotated[list[str] | None, typer.Option("--cronjob", help="A writer CronJob (repeatable).")]
WriterPods = Annotated[
    list[str] | None, typer.Option("--writer-pods", help="Label selector of writer pods to wait for (repeatable).")
]


def _writers(namespace: str, deployments, cronjobs, writer_pods):
    from ..upgrades.kubernetes import KubernetesWriters

    if not deployments:
        raise fail("--namespace needs at least one --deployment (the server's)")
    return KubernetesWriters(namespace, tuple(deployments), tuple(cronjobs or ()), tuple(writer_pods or ()))


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
    namespace: Namespace = None,
    deployment: Deployments = None,
    cronjob: CronJobs = None,
    writer_pods: WriterPods = None,
    rds_instance: Annotated[
        str | None, typer.Option(help="With --namespace: snapshot this RDS instance before a schema change.")
    ] = None,
) -> None:
    """Create the auth database if missing, upgrade both schemas, then grant the server's role.

    With --namespace and --rds-instance a schema change is coordinated: the writers are stopped, the
    instance is snapshotted, both schemas are migrated and verified; the new version's rollout and
    `db resume` start the writers again. Without them a schema change is refused.

    Example:
      PGPASSWORD=... mlflow-platform db prepare --backend-store-uri \\
        postgresql+psycopg://mlflow@db:5432/mlflow
    """
    from ..db import prepare
    from ..upgrades import UpgradeError
    from ..upgrades.coordinated import RdsSnapshot, coordinated_upgrade

    coordinate = None
    if namespace:
        if not rds_instance:
            raise fail("--namespace needs --rds-instance: a schema change is never migrated without a snapshot")
        writers = _writers(namespace, deployment, cronjob, writer_pods)
        backup = RdsSnapshot(rds_instance)

        def coordinate(uri: str, auth: str) -> None:
            coordinated_upgrade(uri, auth, writers, backup, log=out.print)

    try:
        prepare(
            backend_store_uri,
            auth_database,
            app_role,
            os.environ.get(APP_DB_PASSWORD_ENV),
            log=out.print,
            coordinate=coordinate,
        )
    except UpgradeError as exc:
        raise fail(f"database preparation refused: {exc}") from None
    except Exception as exc:  # a Job's log is all on-call sees: say what failed, plainly
        raise fail(f"database preparation failed: {exc}") from None


@app.command("resume")
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
    from ..upgrades import UpgradeError

    writers = _writers(namespace, deployment, cronjob, None)
    try:
        writers.resume(out.print)
        writers.wait_until_available(out.print)
    except UpgradeError as exc:
        raise fail(str(exc)) from None


@app.command("clear-failed-upgrade")
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
