"""MLflow upgrade drills: databases written by older MLflow releases (2.18, and 3.10) through their
own server and client go through the project's coordinated upgrade (the writer stopped, pg_dump
backups, both schemas migrated and verified; the migration Job runs the same code with an RDS
snapshot), and 3.17.2's client finds every byte.

Each old release runs from its own virtualenv, created on first use and cached between runs under
~/.cache/mlflow-platform (MLFLOW_PLATFORM_DRILL_CACHE overrides it).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
import requests
from psycopg import sql

from mlflow_platform.local.platform import LocalPlatform
from mlflow_platform.local.processes import free_port, spawn, stop_group, tail, wait_until

from .paths import ROOT

pytestmark = [pytest.mark.platform, pytest.mark.slow]


@dataclass(frozen=True)
class Release:
    version: str
    #: What it needs beside it to reach PostgreSQL and S3, in versions that install on Python 3.11.
    requirements: tuple[str, ...]
    #: Its SQLAlchemy dialect's driver, named in the URL.
    driver: str

    @property
    def slug(self) -> str:
        return self.version.replace(".", "_")


RELEASES = (
    # 2.18 predates SQLAlchemy 2.1 and pandas 3; its artifact proxy needs boto3, which it does not pull in.
    Release(
        "2.18.0",
        (
            "mlflow==2.18.0",
            "sqlalchemy<2.1",
            "psycopg2-binary==2.9.13",
            "boto3==1.44.5",
            "pandas<3",
            "numpy<3",
        ),
        "psycopg2",
    ),
    # 3.10 with the SQLAlchemy and driver of its time: under SQLAlchemy 2.1 + psycopg 3 its
    # set_model_version_tag fails on PostgreSQL ("operator does not exist: integer = character varying").
    Release(
        "3.10.1",
        ("mlflow[auth]==3.10.1", "sqlalchemy<2.1", "psycopg2-binary==2.9.13", "boto3==1.44.5"),
        "psycopg2",
    ),
)
#: The release-following workflow drills from the pin it replaces too (mlflow-release.yml).
if extra := os.environ.get("MLFLOW_PLATFORM_DRILL_FROM"):
    RELEASES += (Release(extra, (f"mlflow[auth]=={extra}", "psycopg[binary]", "boto3"), "psycopg"),)
WRITER = ROOT / "tests" / "upgrade_drill" / "write_old.py"
CURRENT = metadata.version("mlflow")  # the pinned release the drills upgrade to


def _cli() -> str:
    return str(Path(sys.executable).parent / "mlflow-platform")


def _cache() -> Path:
    return Path(os.environ.get("MLFLOW_PLATFORM_DRILL_CACHE", Path.home() / ".cache" / "mlflow-platform"))


@pytest.fixture(scope="module", params=RELEASES, ids=lambda r: f"from-{r.version}")
def release(request) -> Release:
    return request.param


@pytest.fixture(scope="module")
def old_mlflow(release: Release) -> Path:
    """The old release's virtualenv; rebuilt when its requirements change."""
    key = hashlib.sha256(json.dumps(list(release.requirements)).encode()).hexdigest()[:10]
    venv = _cache() / f"mlflow-{release.version}-{key}"
    if not (venv / ".complete").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        installed = subprocess.run([*pip, *release.requirements], capture_output=True, text=True, timeout=900)
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


def _start_old_server(
    platform: LocalPlatform, bin_dir: Path, work: Path, release: Release, prefix: str
) -> tuple[int, str]:
    """The old release's `mlflow server` with its basic-auth app, on the platform's PostgreSQL and bucket."""
    tracking, auth = _databases(release)
    scheme = f"postgresql+{release.driver}://"
    owner = platform.database_uri(tracking).replace("postgresql+psycopg://", scheme)
    auth_uri = platform.database_uri(auth).replace("postgresql+psycopg://", scheme)
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
        "MLFLOW_FLASK_SERVER_SECRET_KEY": platform.secret_values()["flask_secret_key"],  # 3.x requires it
        "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{platform.state.ports.s3}",
    }
    argv = [
        str(bin_dir / "mlflow"),
        "server",
        "--backend-store-uri",
        owner,
        "--serve-artifacts",
        "--artifacts-destination",
        f"s3://{platform.bucket}/{prefix}",
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
        pytest.fail(f"MLflow {release.version} server did not start:\n{tail(log)}")
    return pid, url


def _databases(release: Release) -> tuple[str, str]:
    return f"drill_{release.slug}", f"drill_{release.slug}_auth"


@dataclass
class OldServer:
    """The old release's server as the upgrade's only writer: stopping it is stopping the writers."""

    pid: int
    url: str
    work: Path
    version: str
    failures: list[str] = field(default_factory=list)

    def stop(self, log) -> None:
        stop_group(self.pid, self.work)

    def resume(self, log) -> None:
        pytest.fail("the drill's backup failed")

    def deployed_version(self) -> str:
        return self.version

    def mark_failed(self, reason: str) -> None:
        self.failures.append(reason)

    def failure(self) -> str | None:
        return None


@pytest.fixture(scope="module")
def written_by_old(platform: LocalPlatform, release: Release, old_mlflow: Path, tmp_path_factory):
    """Two databases written by the old release through its own server and client; yields the
    manifest of what it wrote and the server, still running (the writer the upgrade must stop)."""
    work = tmp_path_factory.mktemp(f"drill-{release.slug}")
    _create_databases(platform, list(_databases(release)))
    pid, url = _start_old_server(platform, old_mlflow, work, release, f"drill-{release.slug}")
    server = OldServer(pid, url, work, release.version)
    try:
        env = {
            "PATH": f"{old_mlflow}:/usr/bin:/bin",
            "HOME": str(work),
            "MLFLOW_TRACKING_USERNAME": "admin",
            "MLFLOW_TRACKING_PASSWORD": platform.secret_values()["admin_password"],
        }
        result = subprocess.run(
            [str(old_mlflow / "python"), str(WRITER), url], env=env, capture_output=True, text=True, timeout=900
        )
        assert result.returncode == 0, result.stderr[-3000:]
        manifest = json.loads(result.stdout.strip().splitlines()[-1])
        assert manifest["mlflow"] == release.version
        yield manifest, server
    finally:
        stop_group(pid, work)  # its processes run in `work`


def _upgrade(platform: LocalPlatform, release: Release, server: OldServer, work: Path):
    """The project's coordinated upgrade (what `db upgrade` and the migration Job run), with the
    old server as the writer and pg_dump files as the backup."""
    from mlflow_platform.database.connection import connect
    from mlflow_platform.database.revisions import UPGRADE, schema_plan
    from mlflow_platform.database.tuning import apply_tuning
    from mlflow_platform.database.upgrade import PgDumps, coordinated_upgrade

    tracking, auth = _databases(release)
    owner = platform.database_uri(tracking)
    assert schema_plan(owner, auth).action == UPGRADE  # the drill would prove nothing otherwise
    backup = PgDumps([owner, platform.database_uri(auth)], work / "backups")
    lines: list[str] = []
    with connect(owner) as conn:  # as the previous deploy's migration step left them
        apply_tuning(conn, log=lines.append)
    outcome = coordinated_upgrade(owner, auth, server, backup, log=lines.append)
    with connect(owner) as conn:  # before the new migration step would ensure them again
        indexes = {
            row[0]: row[1]
            for row in conn.execute(
                "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname LIKE 'mlflow\\_platform\\_%'"
            )
        }
    assert not _answers(server.url) and server.failures == []  # stopped, and no failure recorded
    assert len(list((work / "backups").glob("*.dump"))) == 2  # one per database
    assert outcome.after == {k: outcome.after[k] for k in outcome.before} and outcome.before["runs"] > 20
    return outcome, indexes


def _start_new_server(platform: LocalPlatform, release: Release, work: Path) -> tuple[int, str]:
    """3.17.2 as the project renders it, on the drill's databases and bucket prefix."""
    import dataclasses

    from mlflow_platform.server_spec import render_migration, render_server

    config = platform.config.model_copy(
        update={
            "database": platform.config.database.model_copy(
                update=dict(zip(("tracking_database", "auth_database"), _databases(release), strict=True))
            ),
            "artifacts": platform.config.artifacts.model_copy(update={"prefix": f"drill-{release.slug}"}),
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
        pytest.fail(f"MLflow {CURRENT} did not start on the upgraded database:\n{tail(log)}")
    return pid, url


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture(scope="module")
def upgraded(platform: LocalPlatform, release: Release, written_by_old, tmp_path_factory):
    manifest, server = written_by_old
    work = tmp_path_factory.mktemp(f"upgraded-{release.slug}")
    outcome, indexes = _upgrade(platform, release, server, work)
    started = time.monotonic()
    pid, url = _start_new_server(platform, release, work)
    downtime = outcome.stopped_seconds + time.monotonic() - started
    runs = outcome.before["runs"]
    _report(release, f"{runs} runs, {outcome.before['metrics']:,} metric rows", outcome.stopped_seconds, downtime)
    print(
        f"\nMLflow {release.version} -> {CURRENT}, {runs} runs / {outcome.before['metrics']} metric rows: "
        f"writer stopped, both databases backed up, migrated and verified in {outcome.stopped_seconds:.1f} s; "
        f"downtime until {CURRENT} answered {downtime:.1f} s"
    )
    yield {"url": url, **manifest, "tracking": _databases(release)[0], "indexes": indexes}
    stop_group(pid, work)


def _report(release: Release, data: str, migrate_seconds: float, until_serving_seconds: float) -> None:
    """A row for the release-following pull request's body (MLFLOW_PLATFORM_DRILL_REPORT)."""
    path = os.environ.get("MLFLOW_PLATFORM_DRILL_REPORT")
    if not path:
        return
    report = json.loads(Path(path).read_text()) if Path(path).exists() else {"drills": []}
    report["drills"].append(
        {
            "from": release.version,
            "data": data,
            "migrate_seconds": migrate_seconds,
            "until_serving_seconds": until_serving_seconds,
        }
    )
    Path(path).write_text(json.dumps(report, indent=2))


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


def test_the_platforms_indexes_survive_mlflows_migrations(upgraded: dict) -> None:
    """The platform's indexes (database/tuning.py) were on the old schema while MLflow migrated it
    to the current one: the migrations ran with them in place, and every one came out valid."""
    from mlflow_platform.database.tuning import INDEXES

    assert upgraded["indexes"] == {index.name: True for index in INDEXES}


def test_artifacts_download_byte_identical(upgraded: dict, as_admin, tmp_path: Path) -> None:
    for expected in upgraded["runs"]:
        local = as_admin.download_artifacts(expected["run_id"], expected["artifact"]["path"], str(tmp_path))
        assert hashlib.sha256(Path(local).read_bytes()).hexdigest() == expected["artifact"]["sha256"]


def test_the_old_champion_loads_and_predicts(upgraded: dict, as_admin) -> None:
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
        [sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", platform.database_uri(upgraded["tracking"])]
        + ["--run-ids", upgraded["deleted_run"]],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert purge.returncode == 0, purge.stderr[-2000:]
    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST|not found"):
        as_admin.get_run(upgraded["deleted_run"])


def _mlflow_db(platform: LocalPlatform, upgraded: dict, *args: str) -> str:
    """``mlflow db …`` on the drill's tracking database, as its owner (what an operator runs);
    MLflow's own click commands, in-process (a subprocess per call costs seconds of imports)."""
    from click.testing import CliRunner
    from mlflow.db import commands

    uri = platform.database_uri(upgraded["tracking"])
    result = CliRunner().invoke(commands, [*args[:1], uri, *args[1:]], catch_exceptions=False)
    assert result.exit_code == 0, result.output[-3000:]
    return result.output


def _release_slug(upgraded: dict) -> str:
    return upgraded["tracking"].removeprefix("drill_")


def _copy_into_workspace(platform: LocalPlatform, prefix: str, experiment_id: str, team) -> int:
    """What an operator runs with `aws s3 sync`: the experiment's objects under the workspace's root."""
    s3, bucket = platform.s3_client(), platform.bucket
    source = f"{prefix}/{experiment_id}/"
    copied = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=source):
        for item in page.get("Contents", []):
            target = f"{prefix}/workspaces/{team.workspace_name}/{item['Key'].removeprefix(prefix + '/')}"
            s3.copy_object(Bucket=bucket, Key=target, CopySource={"Bucket": bucket, "Key": item["Key"]})
            copied += 1
    return copied


def _in_workspace(upgraded: dict, workspace: str, monkeypatch: pytest.MonkeyPatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_WORKSPACE", workspace)
    return MlflowClient(upgraded["url"])


def test_an_existing_database_moves_into_a_team_workspace_and_back(
    upgraded: dict, platform: LocalPlatform, as_admin, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What README's "Moving an existing server into teams" runs: an old single-workspace database
    (everything lands in ``default`` on upgrade), ``teams sync`` creates the team's workspace, and
    MLflow's own ``db move-resources`` moves the team's experiments and models; runs, artifacts and
    the model come along and a team member sees them. ``db migrate-to-default-workspace`` undoes it."""
    from mlflow.exceptions import MlflowException

    from mlflow_platform.team_passwords import PasswordFile
    from mlflow_platform.teams import sync

    experiment = as_admin.get_experiment(upgraded["experiment_id"])
    assert experiment.workspace == "default"  # where the upgrade put the old data
    search = next(t for t in platform.config.teams if t.name == "search")
    passwords = PasswordFile(tmp_path / "passwords.json")
    sync(upgraded["url"], platform.config.teams, passwords)
    move = ("move-resources", "--from", "default", "--to", search.workspace_name)
    experiments = (*move, "--resource-type", "experiments", "--name", experiment.name)
    dry = _mlflow_db(platform, upgraded, *experiments, "--dry-run")
    assert "1 experiments row(s) would be moved" in dry, dry
    assert as_admin.get_experiment(upgraded["experiment_id"]).workspace == "default"  # a dry run changes nothing
    _mlflow_db(platform, upgraded, *experiments, "-y")
    _mlflow_db(
        platform, upgraded, *move, "--resource-type", "registered_models", "--name", upgraded["model"]["name"], "-y"
    )

    member = search.members[0]
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", member)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", passwords.get(member))
    team = _in_workspace(upgraded, search.workspace_name, monkeypatch)
    assert team.get_experiment_by_name(experiment.name).experiment_id == upgraded["experiment_id"]
    expected = upgraded["runs"][0]
    assert team.get_run(expected["run_id"]).data.params == expected["params"]
    # Proxied artifacts (mlflow-artifacts:/…) of a non-default workspace resolve under
    # `workspaces/<name>/` of the artifact root, so a moved experiment's old artifacts are not found
    # until they are copied there (the README's step; the originals stay for a move back).
    with pytest.raises(MlflowException, match="Failed to download"):
        team.download_artifacts(expected["run_id"], expected["artifact"]["path"], str(tmp_path))
    copied = _copy_into_workspace(platform, f"drill-{_release_slug(upgraded)}", upgraded["experiment_id"], search)
    assert copied > 0
    local = team.download_artifacts(expected["run_id"], expected["artifact"]["path"], str(tmp_path))
    assert hashlib.sha256(Path(local).read_bytes()).hexdigest() == expected["artifact"]["sha256"]
    champion = team.get_model_version_by_alias(upgraded["model"]["name"], "champion")
    assert champion.version == upgraded["model"]["champion"]
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", platform.secret_values()["admin_password"])
    assert _in_workspace(upgraded, "default", monkeypatch).get_experiment_by_name(experiment.name) is None

    _mlflow_db(platform, upgraded, "migrate-to-default-workspace", "-y")
    back = _in_workspace(upgraded, "default", monkeypatch)
    assert back.get_experiment_by_name(experiment.name).experiment_id == upgraded["experiment_id"]
    assert back.get_registered_model(upgraded["model"]["name"]).name == upgraded["model"]["name"]


def _restore_env(platform: LocalPlatform) -> dict[str, str]:
    return {**os.environ, "MLFLOW_PLATFORM_STATE_DIR": str(platform.state_dir)}


def _cli_run(*args: str, platform: LocalPlatform) -> subprocess.CompletedProcess:
    return subprocess.run([_cli(), *args], env=_restore_env(platform), capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("spelling", [("db", "upgrade", "--local"), ("local", "upgrade")], ids=" ".join)
def test_upgrade_with_no_schema_change_backs_up_and_keeps_the_server_running(
    platform: LocalPlatform, spelling: tuple[str, ...]
) -> None:
    """`db upgrade --local` and its old spelling `local upgrade`: nothing to migrate, and still a
    fresh dump of each database (so a restore drill afterwards has today's backup); never stopped."""
    pid = platform.state.pids.get("tracking")
    dumps = set(platform.backup_dir.glob("*.dump")) if platform.backup_dir.exists() else set()
    result = _cli_run(*spelling, platform=platform)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "=> current" in result.stdout and "nothing to migrate" in result.stdout
    assert "backup taken anyway" in result.stdout
    new = {p.name.rsplit("-", 1)[0] for p in set(platform.backup_dir.glob("*.dump")) - dumps}
    assert new == {platform.config.database.tracking_database, platform.config.database.auth_database}
    assert pid is not None and platform.state.pids.get("tracking") == pid  # never stopped
    assert _answers(platform.tracking_uri())


def _stamp(uri: str, revision: str) -> None:
    from mlflow_platform.database.connection import connect

    with connect(uri) as conn:
        conn.execute("UPDATE alembic_version SET version_num = %s", (revision,))


def test_a_failed_migration_leaves_the_data_restorable_by_the_documented_command(
    platform: LocalPlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database one MLflow release behind; a migration that breaks the data half-way and dies:
    the server stays down, the error names the restore command, that command brings every row back,
    and `local up` refuses to start the old schema without the coordinated upgrade."""
    import mlflow

    from mlflow_platform.database.connection import connect
    from mlflow_platform.database.revisions import _scripts, image_head
    from mlflow_platform.database.upgrade import counts
    from mlflow_platform.errors import UpgradeError
    from mlflow_platform.local.upgrade import upgrade_local

    for key, value in platform.client_env().items():
        monkeypatch.setenv(key, value)
    client = mlflow.MlflowClient(platform.tracking_uri())
    experiment = client.create_experiment(f"/platform/upgrade-drill/{time.time_ns()}")
    run = client.create_run(experiment)
    for step in range(10):
        client.log_metric(run.info.run_id, "loss", 1.0 / (step + 1), step=step)
    uri = platform.database_uri()
    before = counts(uri, platform.config.database.auth_database)
    assert before["metrics"] >= 10
    head = image_head("tracking")
    _stamp(uri, _scripts("tracking").get_revision(head).down_revision)  # as if the image were one release newer

    def broken_migration(owner_uri: str, auth_database: str | None) -> None:
        with connect(owner_uri) as conn:
            conn.execute("DELETE FROM metrics")
        raise RuntimeError("simulated: the migration died half-way")

    with pytest.raises(UpgradeError) as failed:
        upgrade_local(platform, log=lambda _: None, migrate=broken_migration)
    message = str(failed.value)
    assert "Writers stay stopped" in message and "db restore" in message
    assert not _answers(platform.tracking_uri())
    commands = [c.strip() for c in message.split("restore with: ")[1].split(";")]
    tracking_dump = next(c for c in commands if f"/{platform.config.database.tracking_database}-" in c)
    restore = _cli_run(*tracking_dump.split(" ", 1)[1].split()[1:], platform=platform)
    assert restore.returncode == 0, restore.stdout + restore.stderr
    after = counts(uri, platform.config.database.auth_database)
    assert {k: (before[k], after[k]) for k in before if before[k] != after[k]} == {}
    refused = _cli_run("local", "up", "--state-dir", str(platform.state_dir), platform=platform)
    assert refused.returncode == 1 and "db upgrade --local" in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stdout + refused.stderr
    _stamp(uri, head)  # the schema really is at the head: only the stamp was moved back
    platform.up(log=lambda _: None)
    assert _answers(platform.tracking_uri())


@pytest.fixture
def snapshot_instance(platform: LocalPlatform):
    """A second PostgreSQL standing in for the instance RDS restores a snapshot into: same owner
    and password (a snapshot keeps the master user), reached the way an operator's tunnel would."""
    import shutil
    import tempfile

    from mlflow_platform.local.postgres import LocalPostgres

    home = Path(tempfile.mkdtemp(prefix="mlflow-platform-snapshot-")) / "state" / "postgres"
    home.mkdir(parents=True)
    pg = LocalPostgres(home / "data", home / "postgres.log", free_port(), "superuser-" + "x" * 20, 20)
    pg.initialize()
    pg.start()
    owner, password = platform.config.database.username, platform.secret_values()["db_password"]
    try:
        pg.ensure_role_and_databases(owner, password, ["snaptest", "snaptest_auth"])
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(home.parent.parent, ignore_errors=True)


def _rows(uri: str, database: str) -> list[str]:
    from mlflow_platform.database.connection import connect

    with connect(uri, database) as conn:
        return [r[0] for r in conn.execute("SELECT note FROM notes ORDER BY note")]


def _write_notes(uri: str, database: str, notes: list[str]) -> None:
    from mlflow_platform.database.connection import connect

    with connect(uri, database) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS notes (note text)")
        conn.execute("DELETE FROM notes")
        for note in notes:
            conn.execute("INSERT INTO notes VALUES (%s)", (note,))


def test_db_restore_puts_both_databases_back_from_an_rds_snapshot(
    platform: LocalPlatform, snapshot_instance, moto_credentials
) -> None:
    """The command a failed deploy upgrade names: RDS's side (restore to a temporary instance,
    delete it afterwards) under moto, the data side for real: the live databases get exactly the
    snapshot's rows, and the instance Pulumi manages is never replaced."""
    import boto3
    from moto import mock_aws
    from typer.testing import CliRunner

    from mlflow_platform.cli import app

    _create_databases(platform, ["snaptest", "snaptest_auth"])
    live = platform.database_uri("snaptest")
    for database in ("snaptest", "snaptest_auth"):
        _write_notes(live, database, ["written after the snapshot"])
        _write_notes(
            f"postgresql://{platform.config.database.username}:{platform.secret_values()['db_password']}"
            f"@127.0.0.1:{snapshot_instance.port}/{database}",
            database,
            ["before-1", "before-2"],
        )
    with mock_aws():
        ec2, rds = boto3.client("ec2"), boto3.client("rds")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnets = [
            ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"eu-west-1{z}")["Subnet"][
                "SubnetId"
            ]
            for i, z in enumerate("ab")
        ]
        rds.create_db_subnet_group(DBSubnetGroupName="mlflow-prod", DBSubnetGroupDescription="x", SubnetIds=subnets)
        rds.create_db_instance(
            DBInstanceIdentifier="mlflow-prod", Engine="postgres", DBInstanceClass="db.t4g.medium",
            MasterUsername="mlflow", MasterUserPassword="x" * 20, AllocatedStorage=20, DBSubnetGroupName="mlflow-prod",
        )  # fmt: skip
        rds.create_db_snapshot(DBInstanceIdentifier="mlflow-prod", DBSnapshotIdentifier="mlflow-prod-upgrade-x")
        args = ["db", "restore", "--snapshot", "mlflow-prod-upgrade-x", "--rds-instance", "mlflow-prod"]
        args += ["--backend-store-uri", live, "--auth-database", "snaptest_auth"]
        args += ["--restored-endpoint", f"127.0.0.1:{snapshot_instance.port}"]
        dry = CliRunner().invoke(app, [*args, "--dry-run"])
        assert (
            dry.exit_code == 0 and "would" in dry.output and _rows(live, "snaptest") == ["written after the snapshot"]
        )
        alias = CliRunner().invoke(app, ["db-restore", *args[2:], "--dry-run"])  # the old spelling, hidden
        assert alias.exit_code == 0 and alias.output == dry.output
        writer = platform._postgres(platform.state.ports).connect("snaptest")  # another role: a server left running
        try:
            refused = CliRunner().invoke(app, args, terminal_width=200)
        finally:
            writer.close()
        assert refused.exit_code == 1 and "writers are still connected: 1 session(s) of postgres" in refused.output
        assert [i["DBInstanceIdentifier"] for i in rds.describe_db_instances()["DBInstances"]] == ["mlflow-prod"]
        assert _rows(live, "snaptest") == ["written after the snapshot"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        instances = [i["DBInstanceIdentifier"] for i in rds.describe_db_instances()["DBInstances"]]
        assert instances == ["mlflow-prod"]  # the temporary instance is gone, the managed one untouched
    assert _rows(live, "snaptest") == _rows(live, "snaptest_auth") == ["before-1", "before-2"]
