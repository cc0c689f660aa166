"""`teams sync` against the local platform (which declares two teams in stacks/local.yaml): what
`local up` created, idempotence, removals only with --prune, and the smoke suite's isolation
tests skipping on a server without workspaces."""

from __future__ import annotations

import dataclasses
import functools
import stat
import time
from pathlib import Path

import pytest
import requests
from psycopg import sql

from mlflow_platform.config import TeamConfig
from mlflow_platform.local.platform import LocalPlatform
from mlflow_platform.local.processes import free_port, spawn, stop_group, wait_until
from mlflow_platform.team_passwords import PasswordFile
from mlflow_platform.teams import MEMBER_ROLE, READER_ROLE
from mlflow_platform.teams import sync as sync_teams

from .test_smoke_suite import run_smoke_suite

pytestmark = pytest.mark.platform


@pytest.fixture
def as_admin(platform: LocalPlatform, monkeypatch: pytest.MonkeyPatch) -> str:
    for key, value in platform.client_env().items():
        monkeypatch.setenv(key, value)
    return platform.tracking_uri()


def test_local_up_synced_the_declared_teams(platform: LocalPlatform, as_admin: str) -> None:
    import mlflow.server
    from mlflow import MlflowClient

    assert {"search", "ranking"} <= {w.name for w in MlflowClient(as_admin).list_workspaces()}
    auth = mlflow.server.get_app_client("basic-auth", tracking_uri=as_admin)
    ranking = {r.name for r in auth.list_roles("ranking")}
    assert {MEMBER_ROLE, READER_ROLE} <= ranking
    passwords = PasswordFile(platform.team_passwords_file)
    assert stat.S_IMODE(platform.team_passwords_file.stat().st_mode) == 0o600
    ana = requests.get(
        f"{as_admin}/api/2.0/mlflow/experiments/search",
        params={"max_results": 5},
        headers={"X-MLFLOW-WORKSPACE": "search"},
        auth=("ana", passwords.get("ana")),
        timeout=10,
    )
    assert ana.status_code == 200, ana.text


def test_sync_twice_changes_nothing_the_second_time(platform: LocalPlatform, as_admin: str) -> None:
    from typer.testing import CliRunner

    from mlflow_platform.cli import app

    env = {"MLFLOW_PLATFORM_STATE_DIR": str(platform.state_dir)}
    first = CliRunner().invoke(app, ["teams", "sync", "--local"], env=env)
    second = CliRunner().invoke(app, ["teams", "sync", "--local"], env=env)
    assert first.exit_code == second.exit_code == 0, first.output + second.output
    assert second.output.strip().endswith("teams: nothing to change"), second.output


def test_removals_wait_for_prune_and_show_first(platform: LocalPlatform, as_admin: str, tmp_path: Path) -> None:
    suffix = str(time.time_ns())[-6:]
    a, b = f"prune-a-{suffix}", f"prune-b-{suffix}"
    # As `teams sync` runs in a stack with SSO: people who signed in (other tests) keep their roles.
    sync = functools.partial(sync_teams, keep_undeclared_users=platform.config.sso is not None)
    passwords = PasswordFile(tmp_path / "passwords.json")
    # The stack is the whole truth: the platform's own teams stay declared beside the new ones.
    stack = platform.config.teams
    declared = (*stack, TeamConfig(name=a, members=(f"{a}-u",)), TeamConfig(name=b, members=(f"{b}-u",), readers=(a,)))
    created = sync(as_admin, declared, passwords)
    assert f"create workspace {a}" in created.applied and f"assign {a}-u -> {b}/{READER_ROLE}" in created.applied
    narrowed = (*declared[:-1], TeamConfig(name=b, members=(f"{b}-u",)))  # b no longer lets a read
    kept = sync(as_admin, narrowed, passwords)
    expected = {f"unassign {a}-u from {b}/{READER_ROLE}", f"delete role {b}/{READER_ROLE}"}
    assert kept.applied == [] and set(kept.pending_removals) == expected
    shown = sync(as_admin, narrowed, passwords, prune=True, dry_run=True)
    assert set(shown.applied) == expected
    assert set(sync(as_admin, narrowed, passwords).pending_removals) == expected  # the dry run changed nothing
    pruned = sync(as_admin, narrowed, passwords, prune=True)
    assert set(pruned.applied) == expected
    assert sync(as_admin, narrowed, passwords, prune=True).applied == []
    # Back to the platform's own teams: a and b's roles go; their workspaces and users stay (never deleted).
    back = sync(as_admin, stack, passwords, prune=True)
    assert {c for c in back.applied if not c.startswith("unassign")} == {
        f"delete role {ws}/{role}" for ws in (a, b) for role in ("team-admin", "team-member")
    }
    _delete(as_admin, [a, b], [f"{a}-u", f"{b}-u"])


def _delete(uri: str, workspaces: list[str], users: list[str]) -> None:
    import os

    admin = (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"])
    for ws in workspaces:
        gone = requests.delete(
            f"{uri}/api/3.0/mlflow/workspaces/{ws}", params={"mode": "CASCADE"}, auth=admin, timeout=30
        )
        assert gone.status_code in (200, 204), gone.text
    for user in users:
        requests.delete(f"{uri}/api/2.0/mlflow/users/delete", json={"username": user}, auth=admin, timeout=10)


def test_the_isolation_tests_skip_on_a_server_without_workspaces(platform: LocalPlatform, tmp_path: Path) -> None:
    """The server a stack without teams renders, on the platform's PostgreSQL. Its own fresh
    databases: MLflow refuses to start without workspaces on a database that holds experiments in
    a team workspace (which other tests of this session leave)."""
    from mlflow_platform.server_spec import render_server

    config = _plain_config(platform, f"plain_{time.time_ns() % 10**8}")
    ports = dataclasses.replace(platform.state.ports, tracking=free_port())
    work = tmp_path / "plain"
    (work / "metrics").mkdir(parents=True)
    endpoints = dataclasses.replace(  # its own files: the running server's stay untouched
        platform.endpoints(ports),
        auth_config_path=str(work / "basic_auth.ini"),
        trace_archival_config_path=str(work / "trace_archival.yaml"),
        metrics_dir=str(work / "metrics"),
    )
    _migrate(platform, config, endpoints)
    spec = render_server(config, endpoints)
    assert "--enable-workspaces" not in spec.argv
    for path, text in spec.files.items():
        Path(path).write_text(text)
    env = platform.server_environment(spec)
    pid = spawn(spec.argv, env=env, log=work / "server.log", cwd=work)
    url = f"http://127.0.0.1:{ports.tracking}"
    try:
        assert wait_until(lambda: _healthy(url), timeout=120), (work / "server.log").read_text()[-2000:]
        target = {**platform.client_env(), "MLFLOW_TRACKING_URI": url}
        result = run_smoke_suite(target, tmp_path, timeout=300, tests="smoke_tests/test_teams.py")
        assert result.returncode == 0, result.stdout[-3000:]
        assert "3 skipped" in result.stdout and "runs without workspaces" in result.stdout, result.stdout[-2000:]
    finally:
        stop_group(pid, work)


def _plain_config(platform: LocalPlatform, name: str):
    """The local stack without teams (nor SSO, which maps groups to teams), on new databases."""
    d = platform.config.database
    names = {"tracking_database": name, "auth_database": f"{name}_auth"}
    with platform._postgres(platform.state.ports).connect() as conn:
        for database in names.values():
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(d.username))
            )
    return platform.config.model_copy(update={"teams": (), "sso": None, "database": d.model_copy(update=names)})


def _migrate(platform: LocalPlatform, config, endpoints) -> None:
    """The migration step as `local up` runs it: both schemas, then the server's DML-only role."""
    import subprocess

    from mlflow_platform.server_spec import render_migration

    migration = render_migration(config, endpoints)
    secrets = platform._secret_map(platform.secret_values())
    env = {**platform.server_environment(), **migration.resolve_env(secrets)}
    done = subprocess.run(list(migration.argv), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_runbooks_visit_every_workspace_with_all_workspaces(platform: LocalPlatform, as_admin: str) -> None:
    """An experiment with a bad name in the ranking workspace: `audit` (default workspace) does not
    see it, `audit --workspace ranking` and `audit --all-workspaces` do."""
    from mlflow import MlflowClient
    from mlflow.utils.workspace_context import WorkspaceContext
    from typer.testing import CliRunner

    from mlflow_platform.cli import app

    bad = f"bad-{str(time.time_ns())[-8:]}"
    with WorkspaceContext("ranking"):
        MlflowClient(as_admin).create_experiment(bad)
    env = {"MLFLOW_PLATFORM_STATE_DIR": str(platform.state_dir)}
    runner = CliRunner()
    default = runner.invoke(app, ["audit", "--local", "-e", bad], env=env)
    named = runner.invoke(app, ["audit", "--local", "-e", bad, "--workspace", "ranking"], env=env)
    every = runner.invoke(app, ["audit", "--local", "-e", bad, "--all-workspaces"], env=env)
    assert bad not in default.output and bad in named.output, default.output + named.output
    assert "workspace ranking" in every.output and "workspace search" in every.output and bad in every.output
    dry = runner.invoke(app, ["cleanup-runs", "--local", "--all-workspaces"], env=env)
    assert dry.exit_code == 0 and "workspace ranking" in dry.output, dry.output
    both = runner.invoke(app, ["audit", "--local", "--workspace", "search", "--all-workspaces"], env=env)
    assert both.exit_code == 1 and "not both" in both.output
