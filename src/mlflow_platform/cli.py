"""``mlflow-platform``: the local platform and stack configuration checks, from one command."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .cli_runbooks import register as register_runbooks
from .cli_runbooks import register_admin
from .config import ConfigError, load_stack_file
from .local.platform import DEFAULT_PORTS, LocalPlatform, Ports, default_state_dir, find_project_root, open_platform
from .local.processes import PlatformError
from .server_spec import Endpoints, render_server

app = typer.Typer(
    help="Production MLflow on AWS with Pulumi: the local platform, config checks and runbooks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
local_app = typer.Typer(
    help="Run the platform on this machine: embedded PostgreSQL, a local S3 API, the tracking server.",
    no_args_is_help=True,
)
config_app = typer.Typer(help="Validate stack files and show what they render.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema steps (run by the pre-rollout migration Job).", no_args_is_help=True)
app.add_typer(local_app, name="local")
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")
register_runbooks(app)
register_admin(app)

out = Console()
err = Console(stderr=True)

StateDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        envvar="MLFLOW_PLATFORM_STATE_DIR",
        help="Where data, logs and secrets live [default: $MLFLOW_PLATFORM_STATE_DIR, else "
        "<checkout>/.mlflow-platform, else ~/.local/state/mlflow-platform].",
    ),
]
StackFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--stack-file",
        help="Local environment config [default: the one the state dir was started "
        "with, else the packaged local stack].",
    ),
]


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


def _platform(state_dir: Path | None, stack_file: Path | None) -> LocalPlatform:
    try:
        return open_platform(state_dir, stack_file)
    except (ConfigError, PlatformError) as exc:
        raise _fail(str(exc)) from None


@local_app.command("up")
def local_up(
    port: Annotated[
        int | None, typer.Option(help=f"Tracking server port [default: {DEFAULT_PORTS['tracking']}].")
    ] = None,
    postgres_port: Annotated[
        int | None, typer.Option(help=f"PostgreSQL port [default: {DEFAULT_PORTS['postgres']}].")
    ] = None,
    s3_port: Annotated[int | None, typer.Option(help=f"Local S3 API port [default: {DEFAULT_PORTS['s3']}].")] = None,
    s3_internal_port: Annotated[
        int | None,
        typer.Option(
            help=f"First of 7 consecutive ports SeaweedFS uses internally [default: {DEFAULT_PORTS['s3_internal']}]."
        ),
    ] = None,
    state_dir: StateDirOpt = None,
    stack_file: StackFileOpt = None,
) -> None:
    """Start (or heal) the platform and print how to reach it. Safe to run again.

    Example: mlflow-platform local up --port 5050
    """
    platform = _platform(state_dir, stack_file)
    ports = None
    try:
        if any(p is not None for p in (port, postgres_port, s3_port, s3_internal_port)):
            current = platform.state.ports
            ports = Ports(
                tracking=port or current.tracking,
                postgres=postgres_port or current.postgres,
                s3=s3_port or current.s3,
                s3_internal=s3_internal_port or current.s3_internal,
            )
        elapsed = platform.up(ports, log=lambda line: out.print(line, highlight=False))
        env = platform.client_env()
    except (ConfigError, PlatformError) as exc:
        raise _fail(str(exc)) from None
    out.print(f"\n[bold green]MLflow is up[/] in {elapsed:.1f}s: {env['MLFLOW_TRACKING_URI']}")
    out.print(f"  username: {env['MLFLOW_TRACKING_USERNAME']}")
    out.print(f"  password: {env['MLFLOW_TRACKING_PASSWORD']}", highlight=False)
    out.print(f'  use it:   eval "$({_env_command(platform)})"', highlight=False, soft_wrap=True)


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
    words = [str(program), "local", "env"]
    if platform.state_dir != default_state_dir().expanduser().resolve():
        words += ["--state-dir", str(platform.state_dir)]
    return shlex.join(words)


@local_app.command("down")
def local_down(
    purge: Annotated[bool, typer.Option("--purge", help="Also delete all data, logs and secrets.")] = False,
    state_dir: StateDirOpt = None,
    stack_file: StackFileOpt = None,
) -> None:
    """Stop every component. Data survives unless --purge.

    Example: mlflow-platform local down --purge
    """
    platform = _platform(state_dir, stack_file)
    try:
        platform.down(purge=purge, log=lambda line: out.print(line, highlight=False))
    except PlatformError as exc:
        raise _fail(str(exc)) from None


@local_app.command("status")
def local_status(state_dir: StateDirOpt = None, stack_file: StackFileOpt = None) -> None:
    """Show each component's pid, port and health; exit 1 if any is unhealthy."""
    platform = _platform(state_dir, stack_file)
    if not platform.started_before:
        raise _fail(
            f"no local platform in {platform.state_dir}; start one with `mlflow-platform local up`"
            + ("" if state_dir else " (or pass --state-dir)")
        )
    table = Table("component", "pid", "port", "healthy", "detail")
    try:
        rows = platform.status()
    except PlatformError as exc:
        raise _fail(str(exc)) from None
    for row in rows:
        table.add_row(
            row.name, str(row.pid or "-"), str(row.port), "[green]yes[/]" if row.healthy else "[red]no[/]", row.detail
        )
    out.print(table)
    if not all(row.healthy for row in rows):
        raise typer.Exit(code=1)


@local_app.command("env")
def local_env(state_dir: StateDirOpt = None, stack_file: StackFileOpt = None) -> None:
    """Print shell exports for the tracking URI and credentials.

    Example: eval "$(mlflow-platform local env)"
    """
    platform = _platform(state_dir, stack_file)
    if not platform.started_before:
        raise _fail(
            f"no local platform in {platform.state_dir}; start one with `mlflow-platform local up`"
            + ("" if state_dir else ", or pass --state-dir")
        )
    try:
        lines = platform.export_lines()
        running = platform.state.pids.get("tracking")
    except PlatformError as exc:
        raise _fail(str(exc)) from None
    if not running:
        err.print("warning: the platform is stopped; run `mlflow-platform local up` before using it", highlight=False)
    typer.echo(lines)


def _stack_path(stack: str) -> Path:
    path = Path(stack)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    return find_project_root() / "stacks" / f"Pulumi.{stack}.yaml"


@config_app.command("check")
def config_check(stack: Annotated[str, typer.Argument(help="Stack name (dev, staging, prod) or a file.")]) -> None:
    """Validate a stack file and print its connection budget and rendered server command.

    Example: mlflow-platform config check prod
    """
    try:
        loaded = load_stack_file(_stack_path(stack))
    except (ConfigError, PlatformError) as exc:
        raise _fail(str(exc)) from None
    c = loaded.config
    max_conn = c.database.effective_max_connections
    out.print(f"[bold]{c.environment}[/]: valid")
    out.print(
        f"  connection budget {c.connection_budget} of max_connections {max_conn} "
        f"(- {c.database.reserved_connections} reserved)"
    )
    spec = render_server(c, Endpoints(db_host="<database endpoint>", bucket=c.artifacts.bucket or "<bucket>"))
    out.print("  argv: " + " ".join(spec.argv), highlight=False, soft_wrap=True)
    for var in spec.env:
        value = var.value if var.secret is None else f"<secret {var.secret.secret}/{var.secret.key}>"
        out.print(f"  env {var.name}={value}", highlight=False)


_NOISE = {"tags", "tagsAll", "__defaults", "apiVersion", "kind"}


def _summary(inputs: dict, width: int = 60) -> str:
    """The settings worth reading in a preview: top-level scalars, shortened."""
    parts = []
    for key, value in sorted(inputs.items()):
        if key in _NOISE or isinstance(value, (dict, list)) or value is None:
            continue
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        text = str(value)
        parts.append(f"{key}={text if len(text) <= width else text[: width - 1] + '…'}")
    return ", ".join(parts)


@app.command("plan")
def plan_command(
    stack: Annotated[str, typer.Option("--stack", "-s", help="Stack name (dev, staging, prod) or a stack file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print [{type, name, parent, inputs}] instead.")] = False,
    policies: Annotated[
        bool, typer.Option("--policies/--no-policies", help="Run the policy pack over the plan.")
    ] = True,
) -> None:
    """Preview a stack offline: run the Pulumi program under mocks, show what it would create, and
    run the policy pack over it (exit 1 on a mandatory violation).

    No Pulumi CLI, no cloud credentials; secrets are masked. It checks the program and the stack
    config; only a real `pulumi preview` sees the cloud's current state.

    Example: mlflow-platform plan --stack prod
    """
    import json as jsonlib

    import pulumi
    from rich.markup import escape
    from rich.tree import Tree

    from .plan import run

    try:
        root = find_project_root()
        capture = run(_stack_path(stack), project_root=root)
    except (ConfigError, PlatformError) as exc:
        raise _fail(str(exc)) from None
    except pulumi.RunError as exc:
        raise _fail(str(exc)) from None
    violations = _run_policies(root, capture, stack) if policies else []
    if as_json:
        typer.echo(
            jsonlib.dumps(
                [{"type": r.type, "name": r.name, "parent": r.parent, "inputs": r.display} for r in capture.resources],
                indent=2,
                default=str,
            )
        )
        _exit_on_mandatory(violations, quiet=True)
        return
    tree = Tree(f"[bold]{capture.outputs.get('environment', stack)}[/]: {len(capture.resources)} resources")
    nodes = {}
    pending = list(capture.resources)
    for _ in range(len(pending) + 1):  # parents first, whatever order registration took
        rest = []
        for r in pending:
            if r.parent is None or r.parent in nodes:
                anchor = tree if r.parent is None else nodes[r.parent]
                nodes[r.name] = anchor.add(f"[cyan]{r.type}[/] {escape(r.name)}  [dim]{escape(_summary(r.display))}[/]")
            else:
                rest.append(r)
        pending = rest
        if not pending:
            break
    out.print(tree, highlight=False)
    outputs = Table("output", "value")
    for key, value in capture.outputs.items():
        outputs.add_row(key, escape(str(value)))
    out.print(outputs)
    if policies:
        _print_violations(violations)
        _exit_on_mandatory(violations)


def _run_policies(root: Path, capture, stack: str):
    from .policy_check import evaluate, load_policies, load_policy_config

    name = Path(stack).name.split(".")[1] if Path(stack).name.startswith("Pulumi.") else stack
    pack = load_policies()
    return evaluate(capture, pack, load_policy_config(root, name))


def _print_violations(violations) -> None:
    from rich.markup import escape

    if not violations:
        out.print("[bold green]policy pack: no violations[/]")
        return
    table = Table(title="policy pack")
    table.add_column("level", no_wrap=True)
    table.add_column("rule", no_wrap=True)
    for column in ("resource", "violation", "remediation"):
        table.add_column(column)
    for v in violations:
        table.add_row(
            "[red]mandatory[/]" if v.mandatory else "[yellow]advisory[/]",
            v.policy,
            escape(v.resource),
            escape(v.message),
            escape(v.remediation),
        )
    out.print(table)


def _exit_on_mandatory(violations, quiet: bool = False) -> None:
    mandatory = [v for v in violations if v.mandatory]
    if mandatory:
        if quiet:
            for v in mandatory:
                err.print(f"policy {v.policy}: {v.resource}: {v.message}", highlight=False, soft_wrap=True)
        raise _fail(f"{len(mandatory)} mandatory policy violation(s)")


@db_app.command("prepare")
def db_prepare(
    backend_store_uri: Annotated[str, typer.Option(help="Tracking database URL (password via PGPASSWORD).")],
    auth_database: Annotated[str, typer.Option(help="basic-auth database to create if missing.")] = "mlflow_auth",
) -> None:
    """Create the auth database if missing, then run `mlflow db upgrade` on the tracking database.

    Example: PGPASSWORD=... mlflow-platform db prepare --backend-store-uri postgresql+psycopg://mlflow@db:5432/mlflow
    """
    from .db import ensure_database, upgrade_schema

    try:
        created = ensure_database(backend_store_uri, auth_database)
        out.print(f"auth database {auth_database}: {'created' if created else 'exists'}")
        upgrade_schema(backend_store_uri)
    except Exception as exc:  # a Job's log is all on-call sees: say what failed, plainly
        raise _fail(f"database preparation failed: {exc}") from None
    out.print("tracking schema: up to date")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
