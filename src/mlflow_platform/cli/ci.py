"""`mlflow-platform ci check`: the GitHub Environments that guard a stack's CI roles and token."""

from __future__ import annotations

import os
from typing import Annotated

import requests
import typer
from rich.markup import escape

from ..config import ConfigError, load_stack_file
from ..errors import PlatformError
from ..github_settings import GitHub, check
from .output import fail, out
from .stack import _stack_path

app = typer.Typer(help="The GitHub side of CI: Environments, branch rules, reviewers, secrets.", no_args_is_help=True)


@app.command("check")
def check_command(
    stack: Annotated[str, typer.Option("--stack", "-s", help="Stack name (dev, staging, prod) or a stack file.")],
    api: Annotated[str, typer.Option(envvar="GITHUB_API_URL", help="GitHub's REST API.")] = "https://api.github.com",
) -> None:
    """Read-only: do the stack's GitHub Environments keep other branches and pull requests away from
    its deploy and drift roles and its Pulumi token? Needs GITHUB_TOKEN (administration: read).

    Example:
      GITHUB_TOKEN=... mlflow-platform ci check --stack prod
    """
    token = os.environ.get("GITHUB_TOKEN")
    if not token:
        raise fail("set GITHUB_TOKEN to a token that may read the repository's administration settings")
    try:
        config = load_stack_file(_stack_path(stack)).config
    except (ConfigError, PlatformError) as exc:
        raise fail(str(exc)) from None
    repo = config.github.repository
    if not repo:
        raise fail(f"{stack} sets no github.repository: there are no CI roles to guard")
    try:
        findings = check(GitHub(token, api), repo, config)
    except requests.RequestException as exc:
        raise fail(f"could not read {repo}'s settings: {str(exc).splitlines()[0]}") from None
    for finding in findings:
        out.print(f"[red]✗[/] {escape(finding.environment)}: {escape(finding.problem)}", highlight=False)
    if findings:
        raise fail(f"{len(findings)} problem(s) in {repo}'s GitHub Environments for {config.environment}")
    out.print(f"{repo}: the {config.environment} Environments deploy from main only, previews need a reviewer")
