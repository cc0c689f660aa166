"""`mlflow-platform mlflow-release …`: follow MLflow's releases (the scheduled mlflow-release workflow)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import requests
import typer
from packaging.version import InvalidVersion, Version
from rich.markup import escape

from .. import releases
from ..files import find_project_root
from .options import DryRun
from .output import fail, out

app = typer.Typer(help="Follow MLflow's releases: check, bump the pin, describe the bump.", no_args_is_help=True)

Index = Annotated[str, typer.Option(envvar="MLFLOW_PLATFORM_INDEX", help="A PEP 691 package index (JSON simple API).")]


@app.command("check")
def check_command(
    index: Index = "https://pypi.org/simple",
    github_output: Annotated[
        bool,
        typer.Option("--github-output", help="Also write current, newest, target, bump, waiting to $GITHUB_OUTPUT."),
    ] = False,
) -> None:
    """Is there a newer MLflow than the pin, and does it install (every dependency published)?

    Example:
      mlflow-platform mlflow-release check
    """
    try:
        verdict = releases.check(find_project_root(), index)
    except (releases.ReleaseError, requests.RequestException, ValueError) as exc:
        raise fail(f"could not check MLflow's releases: {str(exc).splitlines()[0]}") from None
    if verdict.newest <= verdict.current:
        out.print(f"MLflow {verdict.current} is the newest release")
    if verdict.waiting:
        out.print(f"MLflow {verdict.newest} is out but does not install yet: {escape(verdict.waiting)}")
    if verdict.bump:
        out.print(f"MLflow {verdict.target} installs: bump from {verdict.current}")
    if github_output:
        with open(os.environ["GITHUB_OUTPUT"], "a") as sink:
            sink.writelines(f"{key}={value}\n" for key, value in verdict.outputs().items())


@app.command("bump")
def bump_command(
    to: Annotated[str, typer.Option("--to", help="The MLflow version to pin, e.g. 3.18.0.")],
    dry_run: DryRun = False,
) -> None:
    """Rewrite the MLflow pin in pyproject.toml and server/requirements.txt.

    Example:
      mlflow-platform mlflow-release bump --to 3.18.0 --dry-run
    """
    try:
        version = Version(to)
    except InvalidVersion:
        raise fail(f"--to {to!r} is not a version (e.g. 3.18.0)") from None
    root = find_project_root()
    current = releases.pinned(root)
    if dry_run:
        out.print(f"would pin MLflow {version} (now {current}) in {', '.join(releases.PIN_FILES)}")
        return
    changed = releases.bump(root, version)
    out.print(f"pinned MLflow {version} (was {current}) in {', '.join(changed) or 'nothing: already pinned'}")


@app.command("pr-body")
def pr_body_command(
    to: Annotated[str, typer.Option("--to", help="The version the pull request pins.")],
    was: Annotated[str, typer.Option("--from", help="The version it replaces.")],
    drill_report: Annotated[Path | None, typer.Option(help="The drill's JSON (MLFLOW_PLATFORM_DRILL_REPORT).")] = None,
    drill_passed: Annotated[bool, typer.Option("--drill-passed/--drill-failed", help="The drill's outcome.")] = False,
) -> None:
    """Print the bump pull request's description, with the upgrade drill's figures.

    Example:
      mlflow-platform mlflow-release pr-body --from 3.17.2 --to 3.18.0
    """
    try:
        verdict = releases.Verdict(Version(was), Version(to), None, Version(to))
    except InvalidVersion as exc:
        raise fail(f"{exc}: give versions such as 3.18.0") from None
    typer.echo(releases.pr_body(verdict, drill_report, drill_passed), nl=False)
