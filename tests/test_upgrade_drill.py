"""The MLflow 2.x -> 3.17.2 migration drill: a database written by MLflow 2.18's own server and
client goes through the project's upgrade path (`mlflow-platform db-upgrade`: pg_dump backups of
both databases, then both schemas migrated), and 3.17.2's client finds every byte of it.

MLflow 2.18 runs from its own virtualenv, created on first use and cached between runs under
~/.cache/mlflow-platform (MLFLOW_PLATFORM_DRILL_CACHE overrides it).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from psycopg import sql

from mlflow_platform.local.platform import LocalPlatform
from mlflow_platform.local.processes import free_port, spawn, stop_group, tail, wait_until

from .paths import ROOT

pytestmark = [pytest.mark.platform, pytest.mark.slow]

OLD = "2.18.0"
#: MLflow 2.18 with what it needs to reach PostgreSQL and S3, in a version range that still
#: installs beside Python 3.11 (2.18 predates SQLAlchemy 2.1 and pandas 3).
OLD_REQUIREMENTS = [
    f"mlflow=={OLD}",
    "sqlalchemy<2.1",
    "psycopg2-binary==2.9.13",
    "boto3==1.44.5",  # its artifact proxy writes to the bucket; MLflow 2.18 does not pull boto3 in
    "pandas<3",
    "numpy<3",
]
WRITER = ROOT / "tests" / "upgrade_drill" / "write_old.py"


def _cli() -> str:
    return str(Path(sys.executable).parent / "mlflow-platform")


def _cache() -> Path:
    return Path(os.environ.get("MLFLOW_PLATFORM_DRILL_CACHE", Path.home() / ".cache" / "mlflow-platform"))


@pytest.fixture(scope="session")
def old_mlflow() -> Path:
    """The old release's virtualenv; rebuilt when its requirements change."""
    key = hashlib.sha256(json.dumps(OLD_REQUIREMENTS).encode()).hexdigest()[:10]
    venv = _cache() / f"mlflow-{OLD}-{key}"
    if not (venv / ".complete").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        installed = subprocess.run([*pip, *OLD_REQUIREMENTS], capture_output=True, text=True, timeout=900)
        assert installed.returncode == 0, installed.stderr[-3000:]
        (venv / ".complete").touch()
    return venv / "bin"


def _create_databases(platform: LocalPlatform, names: list[str]) -> None:
    with platform._postgres(platform.state.ports).connect() as conn:
        for name in names:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(platform.config.database.username)
                )
            )


def _start_old_server(platform: LocalPlatform, bin_dir: Path, work: Path, tracking: str, auth: str) -> tuple[int, str]:
    """MLflow 2.18's `mlflow server` with its basic-auth app, on the platform's PostgreSQL and bucket."""
    owner = platform.database_uri(tracking).replace("postgresql+psycopg://", "postgresql://")
    auth_uri = platform.database_uri(auth).replace("postgresql+psycopg://", "postgresql://")
    admin_password = platform.secret_values()["admin_password"]
    ini = work / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = {auth_uri}\nadmin_username = admin\nadmin_password = {admin_password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    port = free_port()
    env = {
        **platform.server_environment(),
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{platform.state.ports.s3}",
    }
    argv = [
        str(bin_dir / "mlflow"),
        "server",
        "--backend-store-uri",
        owner,
        "--serve-artifacts",
        "--artifacts-destination",
        f"s3://{platform.bucket}/drill",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--app-name",
        "basic-auth",
    ]
    log = work / "old-server.log"
    pid = spawn(argv, env=env, log=log, cwd=work)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return requests.get(f"{url}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    if not wait_until(healthy, timeout=180):
        stop_group(pid, work)
        pytest.fail(f"MLflow {OLD} server did not start:\n{tail(log)}")
    return pid, url


@pytest.fixture(scope="module")
def written_by_old(platform: LocalPlatform, old_mlflow: Path, tmp_path_factory) -> dict:
    """Databases drill / drill_auth, written by MLflow 2.18 through its own server and client."""
    work = tmp_path_factory.mktemp("drill")
    _create_databases(platform, ["drill", "drill_auth"])
    pid, url = _start_old_server(platform, old_mlflow, work, "drill", "drill_auth")
    try:
        env = {
            "PATH": f"{old_mlflow}:/usr/bin:/bin",
            "HOME": str(work),
            "MLFLOW_TRACKING_USERNAME": "admin",
            "MLFLOW_TRACKING_PASSWORD": platform.secret_values()["admin_password"],
        }
        result = subprocess.run(
            [str(old_mlflow / "python"), str(WRITER), url], env=env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stderr[-3000:]
        manifest = json.loads(result.stdout.strip().splitlines()[-1])
    finally:
        stop_group(pid, work)  # its processes run in `work`
    assert manifest["mlflow"] == OLD
    return manifest


def _upgrade(platform: LocalPlatform, work: Path) -> float:
    """The project's path: `mlflow-platform db-upgrade` (pg_dump of both databases, both schemas
    migrated), then the migration step that grants the server's role (what a rollout runs)."""
    owner = platform.database_uri("drill")
    started = time.monotonic()
    upgrade = subprocess.run(
        [_cli(), "db-upgrade", "--backend-store-uri", owner]
        + ["--auth-database", "drill_auth", "--backup-dir", str(work / "backups")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.monotonic() - started
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    assert len(list((work / "backups").glob("*.dump"))) == 2  # one per database
    return seconds


def _start_new_server(platform: LocalPlatform, work: Path) -> tuple[int, str]:
    """3.17.2 as the project renders it, on the drill's databases and bucket prefix."""
    import dataclasses

    from mlflow_platform.server_spec import render_migration, render_server

    config = platform.config.model_copy(
        update={
            "database": platform.config.database.model_copy(
                update={"tracking_database": "drill", "auth_database": "drill_auth"}
            ),
            "artifacts": platform.config.artifacts.model_copy(update={"prefix": "drill"}),
        }
    )
    endpoints = platform.endpoints(dataclasses.replace(platform.state.ports, tracking=free_port()))
    secrets = platform._secret_map(platform.secret_values())
    migration = render_migration(config, endpoints)
    env = {**platform.server_environment(), **migration.resolve_env(secrets)}
    prepared = subprocess.run(list(migration.argv), env=env, capture_output=True, text=True, timeout=600)
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr
    spec = render_server(config, endpoints)
    for path, text in spec.files.items():
        Path(path).write_text(text)
    log = work / "new-server.log"
    pid = spawn(spec.argv, env={**platform.server_environment(), **spec.resolve_env(secrets)}, log=log, cwd=work)
    url = f"http://127.0.0.1:{spec.port}"
    ok = wait_until(lambda: _answers(url), timeout=180)
    if not ok:
        stop_group(pid, work)
        pytest.fail(f"MLflow 3.17.2 did not start on the upgraded database:\n{tail(log)}")
    return pid, url


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture(scope="module")
def upgraded(platform: LocalPlatform, written_by_old: dict, tmp_path_factory):
    work = tmp_path_factory.mktemp("upgraded")
    seconds = _upgrade(platform, work)
    print(f"\nMLflow {OLD} -> 3.17.2: backup of both databases + migration: {seconds:.1f} s")
    pid, url = _start_new_server(platform, work)
    yield {"url": url, "upgrade_seconds": seconds, **written_by_old}
    stop_group(pid, work)


@pytest.fixture
def as_admin(upgraded: dict, platform: LocalPlatform, monkeypatch: pytest.MonkeyPatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", platform.secret_values()["admin_password"])
    mlflow.set_tracking_uri(upgraded["url"])
    return mlflow.MlflowClient(upgraded["url"])


def test_runs_params_tags_and_metric_histories_survive(upgraded: dict, as_admin) -> None:
    for expected in upgraded["runs"]:
        run = as_admin.get_run(expected["run_id"])
        assert run.data.params == expected["params"]
        assert {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")} == expected["tags"]
        history = as_admin.get_metric_history(expected["run_id"], "loss")
        assert [m.value for m in sorted(history, key=lambda m: m.step)] == expected["loss"]


def test_artifacts_download_byte_identical(upgraded: dict, as_admin, tmp_path: Path) -> None:
    for expected in upgraded["runs"]:
        local = as_admin.download_artifacts(expected["run_id"], expected["artifact"]["path"], str(tmp_path))
        assert hashlib.sha256(Path(local).read_bytes()).hexdigest() == expected["artifact"]["sha256"]


def test_the_2x_champion_loads_and_predicts(upgraded: dict, as_admin) -> None:
    import mlflow
    import pandas as pd

    model = upgraded["model"]
    assert as_admin.get_model_version_by_alias(model["name"], "champion").version == model["champion"]
    assert as_admin.get_model_version_by_alias(model["name"], "previous-champion").version == model["versions"][0]
    loaded = mlflow.pyfunc.load_model(f"models:/{model['name']}@champion")
    assert list(loaded.predict(pd.DataFrame({"x": [1.0, 2.0]}))) == [1.0 + model["add"], 2.0 + model["add"]]
    tags = as_admin.get_model_version(model["name"], model["champion"]).tags
    assert tags["validation_ndcg"] == str(0.8 + model["add"] / 100)  # as the writer set it


def test_users_keep_their_passwords_and_permissions(upgraded: dict, as_admin) -> None:
    import mlflow.server

    for user in upgraded["users"]:
        auth = (user["username"], user["password"])
        listed = requests.get(
            f"{upgraded['url']}/api/2.0/mlflow/experiments/get",
            params={"experiment_id": upgraded["experiment_id"]},
            auth=auth,
            timeout=10,
        )
        assert listed.status_code == 200, (user["username"], listed.status_code)
        wrong = requests.get(f"{upgraded['url']}/api/2.0/mlflow/experiments/search", auth=(user["username"], "x"))
        assert wrong.status_code == 401
        grants = mlflow.server.get_app_client("basic-auth", tracking_uri=upgraded["url"])  # as the admin
        grant = grants.get_user_permission(user["username"], "experiment", upgraded["experiment_id"])
        assert grant.permission == user["permission"]
        model_grant = grants.get_user_permission(user["username"], "registered_model", upgraded["model"]["name"])
        assert model_grant.permission == user["permission"]


def test_gc_still_purges_the_deleted_run(upgraded: dict, platform: LocalPlatform, as_admin) -> None:
    from mlflow.exceptions import MlflowException

    env = {**platform.server_environment(), "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{platform.state.ports.s3}"}
    purge = subprocess.run(
        [sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", platform.database_uri("drill")]
        + ["--run-ids", upgraded["deleted_run"]],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert purge.returncode == 0, purge.stderr[-2000:]
    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST|not found"):
        as_admin.get_run(upgraded["deleted_run"])


def _restore_env(platform: LocalPlatform) -> dict[str, str]:
    return {**os.environ, "MLFLOW_PLATFORM_STATE_DIR": str(platform.state_dir)}


def test_local_upgrade_stops_backs_up_migrates_and_restarts(platform: LocalPlatform) -> None:
    from mlflow_platform.runbooks.database import counts

    before = counts(platform.database_uri(), platform.config.database.auth_database)
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "mlflow-platform"),
            "local",
            "upgrade",
            "--state-dir",
            str(platform.state_dir),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "upgraded" in result.stdout and result.stdout.count(".dump") >= 2
    assert counts(platform.database_uri(), platform.config.database.auth_database) == before
    assert _answers(platform.tracking_uri())


def test_a_failed_migration_leaves_the_data_restorable_by_the_documented_command(
    platform: LocalPlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration that breaks the data half-way: the server stays down, the error names the
    restore command, and that command brings every row back."""
    import mlflow

    from mlflow_platform.db import connect
    from mlflow_platform.local.upgrade import coordinated_upgrade
    from mlflow_platform.runbooks import RunbookError
    from mlflow_platform.runbooks import database as runbook

    for key, value in platform.client_env().items():
        monkeypatch.setenv(key, value)
    client = mlflow.MlflowClient(platform.tracking_uri())
    experiment = client.create_experiment(f"/platform/upgrade-drill/{time.time_ns()}")
    run = client.create_run(experiment)
    for step in range(10):
        client.log_metric(run.info.run_id, "loss", 1.0 / (step + 1), step=step)
    uri = platform.database_uri()
    before = runbook.counts(uri, platform.config.database.auth_database)
    assert before["metrics"] >= 10

    def broken_migration(target: str) -> None:
        with connect(target) as conn:
            conn.execute("DELETE FROM metrics")
        raise RuntimeError("simulated: the migration died half-way")

    monkeypatch.setattr(runbook, "upgrade_schema", broken_migration)
    with pytest.raises(RunbookError) as failed:
        coordinated_upgrade(platform, log=lambda _: None)
    message = str(failed.value)
    assert "server stays stopped" in message and "db-restore" in message
    assert not _answers(platform.tracking_uri())
    commands = [c.strip() for c in message.split("restore with: ")[1].split("; then")[0].split(";")]
    tracking_dump = next(c for c in commands if f"/{platform.config.database.tracking_database}-" in c)
    restore = subprocess.run(
        [_cli(), *tracking_dump.split(" ", 1)[1].split()[1:]],
        env=_restore_env(platform),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert restore.returncode == 0, restore.stdout + restore.stderr
    after = runbook.counts(uri, platform.config.database.auth_database)
    assert {k: (before[k], after[k]) for k in before if before[k] != after[k]} == {}
    platform.up(log=lambda _: None)
    assert _answers(platform.tracking_uri())
