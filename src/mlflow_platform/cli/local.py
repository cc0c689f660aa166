"""`mlflow-platform local …`: run the platform on this machine."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..config import ConfigError
from ..errors import PlatformError
from ..local.platform import DEFAULT_PORTS, LocalPlatform
from .connect import platform_for
from .options import StackFile, StateDir
from .output import err, fail, out

app = typer.Typer(
    help="Run the platform on this machine: embedded PostgreSQL, SeaweedFS (S3), the tracking server.",
    no_args_is_help=True,
)


ReplicaPort = Annotated[
    int | None,
    typer.Option(
        help=f"The PostgreSQL replica's port (database.readReplica) \\[default: {DEFAULT_PORTS['postgres_replica']}]."
    ),
]


@app.command("up")
def up_command(
    port: Annotated[
        int | None, typer.Option(help=f"Tracking server port \\[default: {DEFAULT_PORTS['tracking']}].")
    ] = None,
    postgres_port: Annotated[
        int | None, typer.Option(help=f"PostgreSQL port \\[default: {DEFAULT_PORTS['postgres']}].")
    ] = None,
    postgres_replica_port: ReplicaPort = None,
    s3_port: Annotated[int | None, typer.Option(help=f"Local S3 API port \\[default: {DEFAULT_PORTS['s3']}].")] = None,
    s3_internal_port: Annotated[
        int | None,
        typer.Option(
            help=f"First of 7 consecutive ports SeaweedFS uses internally \\[default: {DEFAULT_PORTS['s3_internal']}]."
        ),
    ] = None,
    prometheus_port: Annotated[
        int | None, typer.Option(help=f"Local Prometheus UI port \\[default: {DEFAULT_PORTS['prometheus']}].")
    ] = None,
    with_prometheus: Annotated[
        bool | None,
        typer.Option(
            "--with-prometheus/--without-prometheus",
            help="Also run Prometheus, scraping the server and evaluating the alert rules (kept for later ups).",
        ),
    ] = None,
    state_dir: StateDir = None,
    stack_file: StackFile = None,
) -> None:
    """Start (or heal) the platform and print how to reach it. Safe to run again.

    Example:
      mlflow-platform local up --port 5050 --with-prometheus
    """
    platform = platform_for(state_dir, stack_file)
    ports = None
    try:
        chosen = {
            "tracking": port,
            "postgres": postgres_port,
            "postgres_replica": postgres_replica_port,
            "s3": s3_port,
            "s3_internal": s3_internal_port,
            "prometheus": prometheus_port,
        }
        if any(p is not None for p in chosen.values()):  # the others stay as they are
            ports = dataclasses.replace(platform.state.ports, **{k: v for k, v in chosen.items() if v is not None})
        elapsed = platform.up(ports, log=lambda line: out.print(line, highlight=False), prometheus=with_prometheus)
        env = platform.client_env()
    except (ConfigError, PlatformError) as exc:
        raise fail(str(exc)) from None
    out.print(f"\n[bold green]MLflow is up[/] in {elapsed:.1f}s: {env['MLFLOW_TRACKING_URI']}")
    out.print(f"  username: {env['MLFLOW_TRACKING_USERNAME']}")
    out.print(f"  password: {env['MLFLOW_TRACKING_PASSWORD']}", highlight=False)
    out.print(f'  use it:   eval "$({_env_command(platform)})"', highlight=False, soft_wrap=True)
    if "prometheus" in platform.state.extras:
        out.print(f"  prometheus: {platform.prometheus().url}", highlight=False)


def _env_command(platform: LocalPlatform) -> str:
    """The exact command that prints this platform's exports, runnable from any folder."""
    import shlex
    import shutil
    import sys

    program = Path(sys.argv[0])
    program = (
        program.resolve()
        if program.name == "mlflow-platform" and program.exists()
        else Path(shutil.which("mlflow-platform") or Path(sys.executable).parent / "mlflow-platform")
    )
    # Always with --state-dir: "the default" depends on the folder the command is run from.
    return shlex.join([str(program), "local", "env", "--state-dir", str(platform.state_dir)])


@app.command("down")
def down_command(
    purge: Annotated[bool, typer.Option("--purge", help="Also delete all data, logs and secrets.")] = False,
    state_dir: StateDir = None,
    stack_file: StackFile = None,
) -> None:
    """Stop every component. Data survives unless --purge.

    Example:
      mlflow-platform local down --purge
    """
    platform = platform_for(state_dir, stack_file)
    try:
        platform.down(purge=purge, log=lambda line: out.print(line, highlight=False))
    except PlatformError as exc:
        raise fail(str(exc)) from None


@app.command("status")
def status_command(state_dir: StateDir = None, stack_file: StackFile = None) -> None:
    """Show each component's pid, port and health; exit 1 if any is unhealthy."""
    platform = platform_for(state_dir, stack_file)
    if not platform.started_before:
        raise fail(
            f"no local platform in {platform.state_dir}; start one with `mlflow-platform local up`"
            + ("" if state_dir else " (or pass --state-dir)")
        )
    table = Table("component", "pid", "port", "healthy", "detail")
    try:
        rows = platform.status()
    except PlatformError as exc:
        raise fail(str(exc)) from None
    for row in rows:
        table.add_row(
            row.name, str(row.pid or "-"), str(row.port), "[green]yes[/]" if row.healthy else "[red]no[/]", row.detail
        )
    out.print(table)
    if platform.metrics_url and all(row.healthy for row in rows if row.name == "tracking"):
        out.print(f"metrics: {platform.metrics_url} (Prometheus format, the same credentials)", highlight=False)
    if not all(row.healthy for row in rows):
        raise typer.Exit(code=1)


@app.command("env")
def env_command(state_dir: StateDir = None, stack_file: StackFile = None) -> None:
    """Print shell exports for the tracking URI and credentials.

    Example:
      eval "$(mlflow-platform local env)"
    """
    platform = platform_for(state_dir, stack_file)
    if not platform.started_before:
        raise fail(
            f"no local platform in {platform.state_dir}; start one with `mlflow-platform local up`"
            + ("" if state_dir else ", or pass --state-dir")
        )
    try:
        lines = platform.export_lines()
        running = platform.state.pids.get("tracking")
    except PlatformError as exc:
        raise fail(str(exc)) from None
    if not running:
        err.print("warning: the platform is stopped; run `mlflow-platform local up` before using it", highlight=False)
    typer.echo(lines)


@app.command("sso-header")
def sso_header_command(
    username: Annotated[
        str, typer.Argument(metavar="USER", help="Who signs in (the stack's sso.usernameClaim value).")
    ],
    group: Annotated[list[str], typer.Option("--group", help="An IdP group of the user; repeat for more.")] = [],  # noqa: B006
    ttl: Annotated[int, typer.Option(help="Seconds the header stays valid.", min=1, max=3600)] = 300,
    state_dir: StateDir = None,
    stack_file: StackFile = None,
) -> None:
    """Print an x-amzn-oidc-data header as the local ALB signs it (stacks with `sso`).

    Example:
      H=$(mlflow-platform local sso-header ana@example.com --group search-engineers)
      curl -H "x-amzn-oidc-data: $H" -H "X-MLFLOW-WORKSPACE: search" \\
        "http://127.0.0.1:5000/ajax-api/2.0/mlflow/experiments/search?max_results=5"
    """
    platform = platform_for(state_dir, stack_file)
    if platform.config.sso is None:
        raise fail(f"{platform.stack_file} has no `sso` section: single sign-on is off on this platform")
    if not (platform.alb.directory / "private.pem").exists():
        raise fail("no local ALB key yet; start the platform with `mlflow-platform local up`")
    typer.echo(
        platform.alb.header(username, tuple(group), username_claim=platform.config.sso.username_claim, ttl_seconds=ttl)
    )
