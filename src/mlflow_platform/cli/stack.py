"""Stack files: `config check` and the offline `plan` with the policy pack."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..config import ConfigError, load_stack_file
from ..errors import PlatformError
from ..files import find_project_root
from ..placeholders import secrets_warning
from ..placeholders import warning as placeholder_warning
from ..server_spec import Endpoints, render_server
from .output import err, fail, out

config_app = typer.Typer(help="Validate stack files and show what they render.", no_args_is_help=True)
app = typer.Typer()


def warn_placeholders(path: Path) -> None:
    if text := placeholder_warning(path):
        err.print(f"[bold yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True)


def _stack_path(stack: str) -> Path:
    """A stack name (dev, staging, prod) or a stack file; an unknown name lists the known ones."""
    path = Path(stack)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise PlatformError(f"no stack file {path}")
        return path
    if stack == "local":  # not a Pulumi stack: the local platform's, shipped in the package
        from ..local.platform import packaged_local_stack

        return packaged_local_stack()
    stacks = find_project_root() / "stacks"
    found = stacks / f"Pulumi.{stack}.yaml"
    if not found.exists():
        known = sorted(p.name.split(".")[1] for p in stacks.glob("Pulumi.*.yaml"))
        raise PlatformError(f"no stack named {stack!r}; the stacks are: {', '.join(known)} (or pass a stack file)")
    return found


@config_app.command("check")
def check_command(
    stack_argument: Annotated[
        str | None, typer.Argument(metavar="STACK", help="Stack name (dev, staging, prod) or a file.")
    ] = None,
    stack: Annotated[str | None, typer.Option("--stack", "-s", help="The same, as plan takes it.")] = None,
) -> None:
    """Validate a stack file and print its connection budget and rendered server command. A Pulumi
    stack file is also refused when `pulumi up` would refuse it (a missing secret or account) or
    when another stack beside it deploys to the same AWS account.

    Example:
      mlflow-platform config check --stack prod
    """
    name = stack or stack_argument
    if not name:
        raise fail("name a stack: mlflow-platform config check --stack prod (or a stack file)")
    try:
        path = _stack_path(name)
        loaded = load_stack_file(path)
    except (ConfigError, PlatformError) as exc:
        raise fail(str(exc)) from None
    warn_placeholders(path)
    if path.name.startswith("Pulumi."):  # a deployable stack, not the local platform's file
        _refuse_undeployable(path, loaded)
    c = loaded.config
    max_conn = c.database.effective_max_connections
    out.print(f"[bold]{c.environment}[/]: valid")
    out.print(
        f"  connection budget {c.connection_budget} of max_connections {max_conn} "
        f"(- {c.database.reserved_connections} reserved)"
    )
    illustrative = Endpoints(
        db_host="<database endpoint>",
        bucket=c.artifacts.bucket or "<bucket>",
        sso_signer="<the ALB's ARN>",
        sso_key_endpoint="<the region's ALB key endpoint>",
    )
    spec = render_server(c, illustrative)
    out.print("  argv: " + " ".join(spec.argv), highlight=False, soft_wrap=True)
    for var in spec.env:
        value = var.value if var.secret is None else f"<secret {var.secret.secret}/{var.secret.key}>"
        out.print(f"  env {var.name}={value}", highlight=False)


def _refuse_undeployable(path: Path, loaded) -> None:
    """What `pulumi up` would refuse, and an AWS account another stack beside it also deploys to."""
    from ..config import ConfigError, shared_accounts

    problems = loaded.deployment_problems() + shared_accounts(path, loaded)
    if problems:
        raise fail(str(ConfigError(str(path), problems)))


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
    tree: Annotated[bool, typer.Option("--tree", help="Also print every resource under its parent.")] = False,
    policies: Annotated[
        bool, typer.Option("--policies/--no-policies", help="Run the policy pack over the plan.")
    ] = True,
) -> None:
    """Preview a stack offline: run the Pulumi program under mocks, show what it would create, and
    run the policy pack over it (exit 1 on a mandatory violation).

    No Pulumi CLI, no cloud credentials; secrets are masked. It checks the program and the stack
    config; only a real `pulumi preview` sees the cloud's current state.

    Example:
      mlflow-platform plan --stack prod
    """
    import json as jsonlib

    import pulumi

    from ..plan import run

    try:
        root = find_project_root()
        path = _stack_path(stack)
        capture = run(path, project_root=root)
    except (ConfigError, PlatformError) as exc:
        raise fail(str(exc)) from None
    except pulumi.RunError as exc:
        raise fail(str(exc)) from None
    violations = _run_policies(root, capture, stack) if policies else []
    warn_placeholders(path)
    if text := secrets_warning(path, capture.stand_ins):
        err.print(f"[bold yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True)
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
    _print_summary(capture, stack, violations if policies else None)
    if tree:
        out.print(_resource_tree(capture, stack), highlight=False)
    out.print("[bold]outputs[/]")
    width = max(map(len, capture.outputs), default=0)
    for key, value in capture.outputs.items():  # one line each, never cut or folded: ARNs copy whole
        out.print(f"  {key:<{width}}  {escape(str(value))}", highlight=False, soft_wrap=True)
    if policies:
        _print_violations(violations)
        _exit_on_mandatory(violations)


def _print_summary(capture, stack: str, violations) -> None:
    """The verdict first: resources per component and the policy pack's result (details follow)."""
    components = {r.name: r.type.split(":")[-1] for r in capture.resources if r.type.startswith("mlflow-platform:")}
    counts = {f"{kind} ({name})": 0 for name, kind in components.items()}
    for resource in capture.resources:
        top = resource.parent
        while top is not None and top not in components:
            top = next((r.parent for r in capture.resources if r.name == top), None)
        if resource.name not in components:
            label = f"{components[top]} ({top})" if top else "stack"
            counts[label] = counts.get(label, 0) + 1
    table = Table(
        "component",
        "resources",
        title=f"{capture.outputs.get('environment', stack)}: {len(capture.resources)} resources",
    )
    table.columns[0].no_wrap = True
    for label, count in counts.items():
        table.add_row(label, str(count))
    out.print(table, highlight=False)
    if violations is not None:
        mandatory = sum(v.mandatory for v in violations)
        verdict = "[bold green]passes[/]" if not mandatory else f"[bold red]{mandatory} mandatory violation(s)[/]"
        out.print(f"policy pack: {verdict} ({len(violations)} finding(s); details below)")
    out.print("every resource and its settings: add --tree", highlight=False)


def _resource_tree(capture, stack: str):
    """Resources under their parents (parents first, whatever order registration took)."""
    from rich.tree import Tree

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
    return tree


def _run_policies(root: Path, capture, stack: str):
    from ..policy_check import evaluate, load_policies, load_policy_config

    name = Path(stack).name.split(".")[1] if Path(stack).name.startswith("Pulumi.") else stack
    pack = load_policies()
    return evaluate(capture, pack, load_policy_config(root, name))


def _print_violations(violations) -> None:

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
        raise fail(f"{len(mandatory)} mandatory policy violation(s)")


@app.command("preflight")
def preflight_command(
    stack: Annotated[str, typer.Option("--stack", "-s", help="Stack name (dev, staging, prod) or a stack file.")],
) -> None:
    """Read-only checks of the AWS account before `pulumi up` (credentials from the usual AWS
    variables or profile): engine version, GitHub OIDC provider, certificate, VPC and subnets,
    bucket and secret names, Elastic IP quota, an existing cluster's OIDC provider. Exit 1 on a failure.

    Example:
      mlflow-platform preflight --stack prod
    """
    from ..preflight import run_checks

    try:
        path = _stack_path(stack)
        loaded = load_stack_file(path)
    except (ConfigError, PlatformError) as exc:
        raise fail(str(exc)) from None
    region = str(loaded.provider_config.get("aws:region") or "")
    if not region:
        raise fail(f"{path.name} sets no aws:region; add `aws:region: <region>` under config")
    results = run_checks(path, loaded.config, region)
    table = Table("check", "result", "detail", title=f"preflight: {loaded.config.environment} in {region}")
    colour = {"pass": "green", "fail": "red", "skip": "yellow"}
    for r in results:
        table.add_row(r.name, f"[{colour[r.status]}]{r.status}[/]", escape(r.detail))
    out.print(table)
    failed = [r.name for r in results if r.status == "fail"]
    if failed:
        raise fail(f"{len(failed)} check(s) failed: {', '.join(failed)}")
