"""``mlflow-platform``: the local platform, stack checks, the offline plan and the runbooks.

One module per command group, each with module-level commands; the runbook groups are added
without a name, so their commands stay flat (``mlflow-platform promote …``).
"""

from __future__ import annotations

import typer

from . import database, db, local, registry, runs, stack, users

app = typer.Typer(
    help="Production MLflow on AWS with Pulumi: the local platform, config checks and runbooks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(local.app, name="local")
app.add_typer(stack.config_app, name="config")
app.add_typer(db.app, name="db")
for group in (stack.app, registry.app, runs.app, database.app, users.app):
    app.add_typer(group)


def main() -> None:
    """The ``mlflow-platform`` entry point: any error a command did not turn into a message
    still ends as one plain line and exit 1, never a traceback."""
    from mlflow.exceptions import MlflowException

    from ..local.processes import PlatformError
    from ..runbooks import RunbookError
    from .output import fail

    try:
        app()
    except (MlflowException, PlatformError, RunbookError) as exc:
        text = getattr(exc, "message", None) or str(exc)
        raise SystemExit(fail(text.strip().splitlines()[0][:300]).exit_code) from None
