"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
Workspace = Annotated[
    str | None,
    typer.Option(
        "--workspace",
        envvar="MLFLOW_WORKSPACE",
        rich_help_panel="Connection",
        help="The MLflow workspace to act in (a stack with teams); without it, `default`.",
    ),
]
AllWorkspaces = Annotated[
    bool,
    typer.Option("--all-workspaces", rich_help_panel="Connection", help="Act in every workspace, one after another."),
]
Lock = Annotated[
    str | None,
    typer.Option(
        "--lock",
        envvar="MLFLOW_PLATFORM_LOCK",
        help="Required to change the registry: redis://host:port/db, dynamodb://<table>, or local (a file "
        "lock in the local platform's state dir).",
    ),
]
Experiments = Annotated[
    list[str] | None,
    typer.Option("--experiment", "-e", help="Experiment name or glob (/search-team/*); repeatable. Default: all."),
]
ExperimentIds = Annotated[list[str] | None, typer.Option("--experiment-id", help="Experiment id; repeatable.")]
StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        envvar="MLFLOW_PLATFORM_STATE_DIR",
        help="Where data, logs and secrets live \\[default: $MLFLOW_PLATFORM_STATE_DIR, else "
        "<checkout>/.mlflow-platform, else ~/.local/state/mlflow-platform].",
    ),
]
StackFile = Annotated[
    Path | None,
    typer.Option(
        "--stack-file",
        help="Local environment config \\[default: the one the state dir was started "
        "with, else the packaged local stack].",
    ),
]
