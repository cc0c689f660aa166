"""``mlflow-platform``: the local platform, stack checks, the offline plan and the runbooks.

One module per command group, each with module-level commands; the runbook groups are added
without a name, so their commands stay flat (``mlflow-platform promote …``). The database's
commands are one group, ``db``; their old spellings stay as hidden aliases (``ALIASES``).
"""

from __future__ import annotations

from functools import partial

import typer

from . import ci, db, db_maintenance, local, registry, releases, runs, stack, teams, users

app = typer.Typer(
    help="Production MLflow on AWS with Pulumi: the local platform, config checks and runbooks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(local.app, name="local")
app.add_typer(stack.config_app, name="config")
for name, function in db_maintenance.COMMANDS:
    db.app.command(name, rich_help_panel="Upkeep")(function)
app.add_typer(db.app, name="db")
app.add_typer(teams.app, name="teams")
app.add_typer(releases.app, name="mlflow-release")
app.add_typer(ci.app, name="ci")
for group in (stack.app, registry.app, runs.app, users.app):
    app.add_typer(group)

#: Spellings from before the `db` group, kept working (same function, same flags) and hidden from
#: help, because runbooks and external drills call them.
ALIASES = (
    (app, "db-upgrade", db.upgrade_command),
    (app, "db-restore", db.restore_command),
    (app, "restore-drill", db.restore_drill_command),
    (local.app, "upgrade", db.local_upgrade_command),
)
for group, name, function in ALIASES:
    group.command(name, hidden=True)(function)


def command():
    """The click command behind ``app``, with plain value names in help (TEXT, NUMBER, PATH, the
    argument's own name; nothing for flags) where typer 0.29 prints Python types (<str>, <bool>)."""
    built = typer.main.get_command(app)
    _plain_types(built)
    return built


#: typer's type labels -> the plain names click itself uses.
PLAIN_TYPES = {"str": "TEXT", "float": "NUMBER", "int": "INTEGER", "path": "PATH", "bool": ""}


def _plain_types(cmd) -> None:
    help_option = cmd.get_help_option(cmd.context_class(cmd))
    for param in [*cmd.params, *([help_option] if help_option else [])]:
        # typer's help asks each parameter for its type label: answer with a plain one.
        param.display_type_rich = partial(_plain_type, param, param.display_type_rich)
    for sub in getattr(cmd, "commands", {}).values():
        _plain_types(sub)


def _plain_type(param, typer_label, ctx) -> str:
    if getattr(param, "is_flag", False):
        return ""
    if param.metavar:
        return param.metavar
    label = typer_label(ctx) or ""
    inner = label.strip("<>").removesuffix("...")
    if inner.startswith("list[") and inner.endswith("]"):
        return PLAIN_TYPES.get(inner[5:-1].lower(), inner[5:-1].upper()) + "..."
    return PLAIN_TYPES.get(inner.lower(), label)


def main() -> None:
    """The ``mlflow-platform`` entry point: any error a command did not turn into a message
    still ends as one plain line and exit 1, never a traceback."""
    import psycopg
    from mlflow.exceptions import MlflowException

    from ..errors import PlatformError, RunbookError, UpgradeError
    from .output import fail

    try:
        command()(prog_name="mlflow-platform")
    except (MlflowException, PlatformError, RunbookError, UpgradeError, psycopg.Error) as exc:
        text = getattr(exc, "message", None) or str(exc)
        raise SystemExit(fail(text.strip().splitlines()[0][:300]).exit_code) from None
