"""The command line: what a user types, what they read, and the exit codes CI relies on."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml
from typer.testing import CliRunner

from mlflow_platform.cli import app

from .paths import LOCAL_STACK, ROOT

runner = CliRunner()


def args(platform, *command: str) -> list[str]:
    return [*command, "--state-dir", str(platform.state_dir), "--stack-file", str(LOCAL_STACK)]


def test_local_env_prints_evalable_exports(platform) -> None:
    result = runner.invoke(app, args(platform, "local", "env"))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("export ")
    exported = dict(item.split("=", 1) for item in shlex.split(result.output)[1:])
    assert exported["MLFLOW_TRACKING_URI"] == platform.tracking_uri()
    assert exported["MLFLOW_TRACKING_USERNAME"] == "admin"
    assert len(exported["MLFLOW_TRACKING_PASSWORD"]) >= 12


def test_local_status_reports_each_component(platform) -> None:
    result = runner.invoke(app, args(platform, "local", "status"))
    assert result.exit_code == 0, result.output
    for name in ("postgres", "s3", "tracking"):
        assert name in result.output
    assert str(platform.state.ports.tracking) in result.output


def test_local_env_before_any_up_says_what_to_do(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["local", "env", "--state-dir", str(tmp_path / "none"), "--stack-file", str(LOCAL_STACK)]
    )
    assert result.exit_code == 1
    assert "mlflow-platform local up" in result.output


def test_config_check_accepts_prod() -> None:
    result = runner.invoke(app, ["config", "check", str(Path(LOCAL_STACK).parent / "Pulumi.prod.yaml")])
    assert result.exit_code == 0, result.output
    assert "prod: valid" in result.output
    assert "<secret mlflow-server/db-password>" in result.output


def test_config_check_names_the_bad_key_without_a_traceback(tmp_path: Path) -> None:
    stack = yaml.safe_load(LOCAL_STACK.read_text())
    stack["config"]["mlflow-platform:database"]["poolSize"] = 50
    bad = tmp_path / "Pulumi.bad.yaml"
    bad.write_text(yaml.safe_dump(stack))
    result = runner.invoke(app, ["config", "check", str(bad)])
    assert result.exit_code == 1
    assert "database.poolSize" in result.output and "exceeds max_connections 100" in result.output
    assert "Traceback" not in result.output


def test_up_with_a_bad_stack_file_fails_before_starting_anything(tmp_path: Path) -> None:
    stack = yaml.safe_load(LOCAL_STACK.read_text())
    stack["config"]["mlflow-platform:server"]["keepAliveSeconds"] = 30
    bad = tmp_path / "local.yaml"
    bad.write_text(yaml.safe_dump(stack))
    result = runner.invoke(app, ["local", "up", "--state-dir", str(tmp_path / "state"), "--stack-file", str(bad)])
    assert result.exit_code == 1
    assert "server.keepAliveSeconds" in result.output
    assert not (tmp_path / "state").exists()


def test_a_secret_the_example_cannot_carry_is_stood_in_by_plan_and_refused_for_deploy() -> None:
    """pull-request.yml plans staging (sso) on every PR; the example file cannot hold the stack's
    ciphertext. plan warns like a placeholder; config check refuses it, naming the command."""
    planned = runner.invoke(app, ["plan", "--stack", "staging", "--no-policies"], terminal_width=200)
    assert planned.exit_code == 0, planned.output
    assert "sets no ssoClientSecret: the plan used a stand-in" in planned.output
    checked = runner.invoke(app, ["config", "check", "--stack", "staging"], terminal_width=200)
    assert checked.exit_code == 1 and "pulumi config set --secret mlflow-platform:ssoClientSecret" in checked.output
    assert "Traceback" not in checked.output


def test_plan_prod_lists_every_component_and_masks_secrets() -> None:
    result = runner.invoke(app, ["plan", "--stack", "prod", "--tree"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for component in (
        "Network",
        "Cluster",
        "ArtifactStore",
        "Database",
        "ServerRole",
        "ServerImage",
        "LoadBalancer",
        "TrackingServer",
        "Monitoring",
        "GithubCiRoles",
    ):
        assert component in result.output
    assert "password=[secret]" in result.output
    assert "trackingUrl" in result.output and "https://mlflow.example.com" in result.output


def test_plan_json_is_a_list_of_resources_with_secrets_masked() -> None:
    import json

    result = runner.invoke(app, ["plan", "--stack", "dev", "--json"])
    assert result.exit_code == 0, result.output
    resources = json.loads(result.stdout)  # warnings go to stderr
    assert {"type", "name", "parent", "inputs"} == set(resources[0])
    secret = next(r for r in resources if r["type"] == "kubernetes:core/v1:Secret")
    assert set(secret["inputs"]["stringData"].values()) == {"[secret]"}
    instance = next(r for r in resources if r["type"] == "aws:rds/instance:Instance")
    assert instance["inputs"]["password"] == "[secret]" and instance["parent"] == "database"


def test_plan_with_a_bad_value_names_the_key_without_a_traceback(tmp_path: Path) -> None:
    stack = yaml.safe_load((Path(LOCAL_STACK).parent / "Pulumi.prod.yaml").read_text())
    del stack["config"]["mlflow-platform:loadBalancer"]["certificateArn"]
    del stack["config"]["mlflow-platform:loadBalancer"]["route53ZoneId"]
    stack["config"]["mlflow-platform:loadBalancer"]["allowedCidrs"] = ["10.0.0.0/8"]
    bad = tmp_path / "Pulumi.broken.yaml"
    bad.write_text(yaml.safe_dump(stack))
    result = runner.invoke(app, ["plan", "--stack", str(bad)])
    assert result.exit_code == 1
    assert "loadBalancer.certificateArn" in result.output and "Traceback" not in result.output
    stack["config"]["mlflow-platform:loadBalancer"]["allowedCidrs"] = ["10.0.0.0/33"]
    bad.write_text(yaml.safe_dump(stack))
    result = runner.invoke(app, ["plan", "--stack", str(bad)])
    assert result.exit_code == 1 and "loadBalancer.allowedCidrs" in result.output


def test_plan_runs_the_policy_pack_and_fails_on_a_mandatory_violation(tmp_path: Path) -> None:
    ok = runner.invoke(app, ["plan", "--stack", "prod"], terminal_width=200)
    assert ok.exit_code == 0 and "policy pack: no violations" in ok.output
    stack = yaml.safe_load((Path(LOCAL_STACK).parent / "Pulumi.prod.yaml").read_text())
    stack["config"]["mlflow-platform:server"]["basicAuth"] = False
    stack["config"]["mlflow-platform:database"]["multiAz"] = False
    bad = tmp_path / "Pulumi.prod.yaml"  # named like prod, so prod's policy config applies
    bad.write_text(yaml.safe_dump(stack))
    result = runner.invoke(app, ["plan", "--stack", str(bad)], terminal_width=250)
    assert result.exit_code == 1
    assert "mlflow-basic-auth" in result.output and "rds-production-ha" in result.output
    assert "mandatory policy violation" in result.output


def test_plan_prod_shows_the_runbook_cronjobs() -> None:
    result = runner.invoke(app, ["plan", "--stack", "prod", "--tree"], terminal_width=200)
    for name in ("runbooks-reap-stuck-runs", "runbooks-cleanup-runs", "runbooks-gc"):
        assert name in result.output


def _command(*args: str, env: dict | None = None, cwd: Path | None = None):
    """The installed command, as a user runs it (through its entry point, not CliRunner)."""
    import os
    import subprocess
    import sys

    program = Path(sys.executable).parent / "mlflow-platform"
    return subprocess.run(
        [str(program), *args], capture_output=True, text=True, timeout=120, cwd=cwd, env={**os.environ, **(env or {})}
    )


def test_an_unreachable_tracking_uri_fails_fast_in_one_line(tmp_path: Path) -> None:
    from mlflow_platform.local.processes import free_port

    result = _command("audit", "--tracking-uri", f"http://127.0.0.1:{free_port()}", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot reach http://127.0.0.1:" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_rejected_credentials_name_the_user_and_the_uri(platform, tmp_path: Path) -> None:
    env = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "not-the-password"}
    for runbook in (["audit"], ["cleanup-runs"], ["reap-stuck-runs", "--dry-run"]):
        result = _command(*runbook, "--tracking-uri", platform.tracking_uri(), env=env, cwd=tmp_path)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert f"{platform.tracking_uri()} refused user 'admin' (401)" in result.stderr
        assert "local env" in result.stderr


def test_an_unknown_stack_lists_the_known_ones() -> None:
    result = _command("plan", "--stack", "prd")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "no stack named 'prd'; the stacks are: dev, prod, staging" in result.stderr


def test_help_keeps_its_defaults() -> None:
    result = runner.invoke(app, ["local", "up", "--help"], env={"COLUMNS": "200"})
    assert "Tracking server port [default: 5000]." in result.output
    assert "[default: 9101]" in result.output


def test_an_arn_with_secret_in_it_prints_verbatim() -> None:
    from mlflow_platform.cli.output import out

    with out.capture() as captured:
        out.print("arn:aws:secretsmanager:eu-west-1:123456789012:secret:mlflow-prod-admin-AbCdEf")
    assert ":secret:mlflow-prod-admin" in captured.get()


def test_example_values_are_named_until_replaced(tmp_path: Path) -> None:
    result = runner.invoke(app, ["config", "check", "--stack", "prod"])
    assert result.exit_code == 0
    assert "Pulumi.prod.yaml still holds example values (marked # CHANGE ME)" in result.output
    assert "loadBalancer.hostname" in result.output and "github.repository" in result.output
    replaced = tmp_path / "Pulumi.prod.yaml"
    replaced.write_text((ROOT / "stacks" / "Pulumi.prod.yaml").read_text().replace("# CHANGE ME", ""))
    clean = runner.invoke(app, ["config", "check", str(replaced)])
    assert clean.exit_code == 0 and "example values" not in clean.output


def test_config_check_takes_the_stack_as_plan_does_and_knows_local() -> None:
    for args in (["config", "check", "--stack", "dev"], ["config", "check", "dev"], ["config", "check", "local"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and ": valid" in result.output, (args, result.output)


def test_usage_lines_name_arguments_in_capitals() -> None:
    for command, argument in (
        (["promote"], "MODEL"),
        (["validate"], "MODEL"),
        (["rollback"], "MODEL"),
        (["config", "check"], "STACK"),
    ):
        usage = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"}).output.splitlines()[1]
        assert argument in usage and argument.lower() not in usage, usage


def test_plan_puts_the_verdict_first_and_prints_arns_whole_at_80_columns() -> None:
    result = runner.invoke(app, ["plan", "--stack", "prod"], terminal_width=80)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    verdict = next(i for i, line in enumerate(lines) if line.startswith("policy pack: passes"))
    assert verdict < 25 and "TrackingServer (tracking)" in result.stdout
    assert "kubernetes:apps/v1:Deployment" not in result.stdout  # the tree only with --tree
    arns = [line.split()[-1] for line in lines if line.strip().startswith(("databaseSecretArn", "adminSecretArn"))]
    assert len(arns) == 2 and all(":secret:mlflow/prod/" in arn and arn.endswith("-AbCdEf") for arn in arns)
    tree = runner.invoke(app, ["plan", "--stack", "prod", "--tree"], terminal_width=80).stdout
    assert "kubernetes:apps/v1:Deployment" in tree  # wrapped at spaces: a type name is never split
