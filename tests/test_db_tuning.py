"""The platform's indexes and autovacuum settings (database/tuning.py) on the live platform's
database, and the planner's use of each index for the query MLflow itself sends: captured from
MLflow's own store, so an MLflow upgrade that changes a query's shape fails here first."""

from __future__ import annotations

import threading
import time
import warnings

import pytest
from mlflow.utils.workspace_context import WorkspaceContext
from psycopg import errors
from sqlalchemy import event

from mlflow_platform.database import tuning
from mlflow_platform.database.connection import connect
from mlflow_platform.database.schema import prepare
from mlflow_platform.database.tuning import AUTOVACUUM, HOT_TABLES, INDEXES, apply_tuning, plan_tuning, remove_tuning
from mlflow_platform.database.workspace_mode import DEFAULT, holds_team_data, workspace_mode
from mlflow_platform.errors import RunbookError


@pytest.fixture
def owner(platform):
    with connect(platform.database_uri()) as conn:
        yield conn


def _valid(conn) -> dict[str, bool]:
    rows = conn.execute(
        "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname LIKE 'mlflow\\_platform\\_%'"
    ).fetchall()
    return dict(rows)


def test_tuning_is_applied_once_and_then_there_is_nothing_to_do(owner, monkeypatch) -> None:
    # one the platform shipped and retired (a changed definition takes a new name): dropped
    monkeypatch.setattr(tuning, "RETIRED", ("mlflow_platform_retired",))
    owner.execute("CREATE INDEX IF NOT EXISTS mlflow_platform_retired ON runs (name)")
    # one a DBA named like ours but the platform never shipped: not the platform's to drop
    owner.execute("CREATE INDEX IF NOT EXISTS mlflow_platform_dba_hotfix ON runs (user_id)")
    try:
        assert "drop index mlflow_platform_retired concurrently (retired)" in plan_tuning(owner)
        assert not any("hotfix" in action for action in plan_tuning(owner))
        apply_tuning(owner, log=lambda _: None)
        assert _valid(owner) == {index.name: True for index in INDEXES} | {"mlflow_platform_dba_hotfix": True}
        assert plan_tuning(owner) == []
        for table in HOT_TABLES:
            options = owner.execute("SELECT reloptions FROM pg_class WHERE relname = %s", (table,)).fetchone()[0]
            assert {f"{k}={v}" for k, v in AUTOVACUUM.items()} <= set(options)
        assert "mlflow_platform_dba_hotfix" not in remove_tuning(owner)
        assert _valid(owner) == {"mlflow_platform_dba_hotfix": True}
    finally:
        owner.execute("DROP INDEX IF EXISTS mlflow_platform_dba_hotfix")
        apply_tuning(owner, log=lambda _: None)


def test_a_dbas_own_autovacuum_setting_for_a_table_is_kept(owner) -> None:
    """A DBA who tuned one table's autovacuum differently must not find it reset on every deploy."""
    apply_tuning(owner, log=lambda _: None)
    owner.execute("ALTER TABLE metrics SET (autovacuum_vacuum_scale_factor = 0.002)")
    owner.execute("ALTER TABLE params RESET (autovacuum_analyze_scale_factor)")
    try:
        assert plan_tuning(owner) == ["set autovacuum on params: autovacuum_analyze_scale_factor = 0.01"]
        apply_tuning(owner, log=lambda _: None)
        metrics = owner.execute("SELECT reloptions FROM pg_class WHERE relname = 'metrics'").fetchone()[0]
        assert "autovacuum_vacuum_scale_factor=0.002" in metrics
        assert plan_tuning(owner) == []
        remove_tuning(owner)  # --undo takes back only what is ours
        metrics = owner.execute("SELECT reloptions FROM pg_class WHERE relname = 'metrics'").fetchone()[0]
        assert metrics == ["autovacuum_vacuum_scale_factor=0.002"]
    finally:
        owner.execute("ALTER TABLE metrics SET (autovacuum_vacuum_scale_factor = 0.01)")
        apply_tuning(owner, log=lambda _: None)


def test_an_interrupted_concurrent_build_is_dropped_and_built_again(owner, mlflow_client) -> None:
    """CREATE INDEX CONCURRENTLY that fails leaves an INVALID index under the name; IF NOT EXISTS
    would then skip it for good and the planner would never use it."""
    experiment = mlflow_client.create_experiment("/platform/tests/tuning-invalid")
    for _ in range(2):
        mlflow_client.create_run(experiment)
    apply_tuning(owner, log=lambda _: None)
    name = INDEXES[0].name
    owner.execute(f"DROP INDEX {name}")
    with pytest.raises(errors.UniqueViolation):  # two runs in one experiment: the build fails midway
        owner.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {name} ON runs (experiment_id)")
    assert _valid(owner)[name] is False
    assert any("invalid" in action for action in plan_tuning(owner))
    apply_tuning(owner, log=lambda _: None)
    assert _valid(owner)[name] is True
    unique = owner.execute("SELECT indisunique FROM pg_index WHERE indexrelid = %s::regclass", (name,)).fetchone()
    assert unique == (False,)


def test_removing_the_tuning_leaves_mlflows_schema_alone(owner) -> None:
    apply_tuning(owner, log=lambda _: None)
    mlflow_indexes = owner.execute(
        "SELECT count(*) FROM pg_indexes WHERE schemaname = 'public' AND indexname NOT LIKE 'mlflow\\_platform\\_%'"
    ).fetchone()
    assert set(remove_tuning(owner)) == {index.name for index in INDEXES}
    assert _valid(owner) == {}
    assert (
        owner.execute(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'public' AND indexname NOT LIKE 'mlflow\\_platform\\_%'"
        ).fetchone()
        == mlflow_indexes
    )
    apply_tuning(owner, log=lambda _: None)


def test_a_second_tuner_changes_nothing_and_says_why(platform, owner) -> None:
    """A deploy's migration step and an operator's `db tune` at once: the second would take the
    first one's half-built index for an interrupted build and drop it."""
    apply_tuning(owner, log=lambda _: None)
    with connect(platform.database_uri()) as first:
        assert first.execute("SELECT pg_try_advisory_lock(hashtext('mlflow_platform.tuning'))").fetchone()[0]
        owner.execute(f"DROP INDEX {INDEXES[0].name}")
        with pytest.raises(RunbookError, match="another tuner"):
            apply_tuning(owner, log=lambda _: None)
        with pytest.raises(RunbookError, match="another tuner"):
            remove_tuning(owner)
        assert INDEXES[0].name not in _valid(owner) and len(_valid(owner)) == len(INDEXES) - 1
        lines: list[str] = []
        prepare(platform.database_uri(), platform.config.database.auth_database, None, None, log=lines.append)
        assert any("tuning: not finished" in line and "another tuner" in line for line in lines), lines
        first.execute("SELECT pg_advisory_unlock_all()")  # closing alone frees it only when the backend has exited
    apply_tuning(owner, log=lambda _: None)
    assert _valid(owner) == {index.name: True for index in INDEXES}


def test_a_build_still_running_is_not_taken_for_an_interrupted_one(platform, owner) -> None:
    """An invalid index is also what a build in progress looks like (PostgreSQL goes on building
    after its client was killed): dropping it would cancel the build and start from zero."""
    apply_tuning(owner, log=lambda _: None)
    name = INDEXES[0].name
    owner.execute(f"DROP INDEX {name}")
    blocker = connect(platform.database_uri())
    blocker.autocommit = False
    blocker.execute("LOCK TABLE runs IN ROW EXCLUSIVE MODE")  # a writer the build must wait for
    builder = threading.Thread(target=lambda: _build(platform.database_uri(), INDEXES[0]))
    builder.start()
    try:
        assert _wait(lambda: _valid(owner).get(name) is False), "the build never started"
        assert any("build in progress" in action for action in plan_tuning(owner)), plan_tuning(owner)
        apply_tuning(owner, log=lambda _: None)
        assert _valid(owner).get(name) is False  # left to its build, not dropped
    finally:
        blocker.rollback()
        blocker.close()
        builder.join(timeout=60)
    assert _valid(owner)[name] is True


def _build(uri: str, index) -> None:
    with connect(uri) as conn:
        conn.execute(index.create())


def _wait(condition, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def _mlflow_queries(uri: str, experiment_id: str):
    """The SQL MLflow's own store sends for the searches the indexes are for."""
    from mlflow.entities import ViewType
    from mlflow.tracking import _get_store

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store = _get_store(uri)  # the workspace-aware store once a team's data is in the database
    seen: list[tuple[str, dict]] = []
    event.listen(store.engine, "before_cursor_execute", lambda c, cur, stmt, params, *_: seen.append((stmt, params)))
    searches = {
        "runs_experiment_order": ("", ["attributes.start_time DESC"]),
        "runs_experiment_start": ("tags.team = 'nlp'", None),
        "params_value": ("params.lr = '0.1'", None),
        "tags_value": ("tags.mlflow.runName = 'tuning-run'", None),
        "latest_metrics_value": ("metrics.loss > 0.1", ["metrics.loss DESC"]),
    }
    captured = {}
    for name, (filter_string, order_by) in searches.items():
        seen.clear()
        store.search_runs([experiment_id], filter_string, ViewType.ACTIVE_ONLY, 100, order_by)
        captured[name] = next(s for s in seen if "FROM runs" in s[0])
    return captured, store


#: 20,000 runs in the experiment, each with a distinct name, a param, a tag and a latest metric,
#: so that the planner's statistics look like a real experiment's (with one row it scans anyway).
_POPULATE = """
INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, start_time,
                  end_time, source_version, lifecycle_stage, artifact_uri, experiment_id)
SELECT md5('tuning' || i), 'r' || i, 'LOCAL', '', '', 'ana', 'FINISHED', 1700000000000 + i, NULL, '',
       'active', 'mlflow-artifacts:/x', %(experiment)s FROM generate_series(1, 20000) AS i;
INSERT INTO tags (key, value, run_uuid) SELECT 'mlflow.runName', 'r' || i, md5('tuning' || i)
    FROM generate_series(1, 20000) AS i;
INSERT INTO params (key, value, run_uuid) SELECT 'lr', (i %% 1000)::text, md5('tuning' || i)
    FROM generate_series(1, 20000) AS i;
INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid)
    SELECT 'loss', random(), 0, 0, false, md5('tuning' || i) FROM generate_series(1, 20000) AS i;
"""
_CLEAN = """
DELETE FROM latest_metrics WHERE run_uuid IN (SELECT md5('tuning' || i) FROM generate_series(1, 20000) AS i);
DELETE FROM params WHERE run_uuid IN (SELECT md5('tuning' || i) FROM generate_series(1, 20000) AS i);
DELETE FROM tags WHERE run_uuid IN (SELECT md5('tuning' || i) FROM generate_series(1, 20000) AS i);
DELETE FROM runs WHERE run_uuid IN (SELECT md5('tuning' || i) FROM generate_series(1, 20000) AS i);
"""


def _script(conn, script: str, **params) -> None:
    for statement in filter(str.strip, script.split(";")):
        conn.execute(statement, params or None)


def test_the_planner_can_use_each_index_for_the_query_mlflow_sends(platform, mlflow_client, owner) -> None:
    apply_tuning(owner, log=lambda _: None)
    experiment = mlflow_client.create_experiment("/platform/tests/tuning-plans")
    run = mlflow_client.create_run(experiment, run_name="tuning-run").info.run_id
    mlflow_client.log_param(run, "lr", "0.1")
    mlflow_client.set_tag(run, "team", "nlp")
    mlflow_client.log_metric(run, "loss", 0.5, step=1)
    uri = platform.database_uri()
    with workspace_mode(holds_team_data(uri)), WorkspaceContext(DEFAULT):
        queries, store = _mlflow_queries(uri, experiment)
    try:
        _script(owner, _POPULATE, experiment=int(experiment))
        # VACUUM sets the visibility map, without which the planner prices index-only scans as
        # heap fetches; scans and sorts are priced out so the question is whether an index CAN
        # serve the query's filter and order (an expression index that does not match never can).
        owner.execute("VACUUM (ANALYZE) runs, tags, params, latest_metrics")
        with store.engine.connect() as conn:
            conn.exec_driver_sql("SET enable_seqscan = off")
            conn.exec_driver_sql("SET enable_sort = off")
            for suffix, (statement, params) in queries.items():
                plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + statement, params))
                assert f"mlflow_platform_{suffix}" in plan, plan
    finally:
        store.engine.dispose()
        _script(owner, _CLEAN)


def _writer_in_a_transaction(uri: str):
    """A writer's open transaction on runs: CREATE INDEX CONCURRENTLY waits for it to end."""
    blocker = connect(uri)
    blocker.autocommit = False
    blocker.execute("LOCK TABLE runs IN ROW EXCLUSIVE MODE")
    return blocker


def test_index_builds_stop_at_the_budget(platform, owner) -> None:
    """The deploy's migration Job has a deadline; a build that waits on a long transaction (or
    indexes a huge table) must give up before it, not be killed with the pod."""
    apply_tuning(owner, log=lambda _: None)
    owner.execute(f"DROP INDEX {INDEXES[0].name}")
    blocker = _writer_in_a_transaction(platform.database_uri())
    lines: list[str] = []
    started = time.monotonic()
    try:
        with pytest.raises(RunbookError, match=f"{INDEXES[0].name}: canceling statement due to statement timeout"):
            apply_tuning(owner, log=lines.append, budget=2)
        assert time.monotonic() - started < 15
        assert any("its invalid index is left to the next tuning" in line for line in lines), lines
        # the migration step logs it and goes on: a deploy does not fail over an index
        prepare(
            platform.database_uri(),
            platform.config.database.auth_database,
            None,
            None,
            log=lines.append,
            index_budget=1,
        )
        assert any(line.startswith("tuning: not finished (1 of 5 indexes not built") for line in lines), lines
    finally:
        blocker.rollback()
        blocker.close()
    apply_tuning(owner, log=lambda _: None)
    assert _valid(owner) == {index.name: True for index in INDEXES}


def test_one_index_that_fails_does_not_stop_the_others(owner, monkeypatch) -> None:
    apply_tuning(owner, log=lambda _: None)
    broken = tuning.Index("mlflow_platform_broken", "runs", "(no_such_column)", "a definition MLflow outgrew")
    monkeypatch.setattr(tuning, "INDEXES", (broken, *INDEXES))
    owner.execute(f"DROP INDEX {INDEXES[-1].name}")
    owner.execute("ALTER TABLE tags RESET (autovacuum_vacuum_scale_factor)")
    with pytest.raises(RunbookError, match='1 of 6 indexes not built .mlflow_platform_broken: column "no_such_column"'):
        apply_tuning(owner, log=lambda _: None)
    assert _valid(owner) == {index.name: True for index in INDEXES}
    assert (
        "autovacuum_vacuum_scale_factor=0.01"
        in owner.execute("SELECT reloptions FROM pg_class WHERE relname = 'tags'").fetchone()[0]
    )


_TUNER = """
import sys
from mlflow_platform.database.connection import connect
from mlflow_platform.database.tuning import apply_tuning
with connect(sys.argv[1]) as conn:
    apply_tuning(conn)
"""


def test_a_killed_tuner_does_not_leave_its_build_and_lock_behind(platform, owner) -> None:
    """The migration Job's pod killed mid-build (deadline, eviction, a cancelled deploy): PostgreSQL
    notices a vanished client only when it next writes to it, so without a client check the build
    runs on and holds the one-tuner lock, and every later deploy's tuning is refused."""
    import subprocess
    import sys

    apply_tuning(owner, log=lambda _: None)
    name = INDEXES[0].name
    owner.execute(f"DROP INDEX {name}")
    blocker = _writer_in_a_transaction(platform.database_uri())
    tuner = subprocess.Popen([sys.executable, "-c", _TUNER, platform.database_uri()], stdout=subprocess.DEVNULL)
    try:
        assert _wait(lambda: tuning._building(owner, name) is not None), "the build never started"
        tuner.kill()
        tuner.wait()
        assert _wait(lambda: tuning._building(owner, name) is None, timeout=30), "the build outlived its client"
        assert owner.execute(tuning._LOCK).fetchone()[0], "the one-tuner lock outlived its client"
        owner.execute(tuning._UNLOCK)
    finally:
        tuner.kill()
        blocker.rollback()
        blocker.close()
    apply_tuning(owner, log=lambda _: None)
    assert _valid(owner) == {index.name: True for index in INDEXES}


def test_a_schema_upgrade_ends_index_builds_and_keeps_tuners_out(platform, owner) -> None:
    """A migration's ALTER TABLE waits behind a concurrent build (its ShareUpdateExclusive lock) for
    as long as the build takes, with every writer stopped; the upgrade ends the build first and
    holds the one-tuner lock until it is done. (The tracking stamp is moved one revision back, as
    if the image were newer; the stand-in migration puts it back.)"""
    from mlflow_platform.database.revisions import image_head
    from mlflow_platform.database.upgrade import StoppedByOperator, coordinated_upgrade

    apply_tuning(owner, log=lambda _: None)
    name, uri, head = INDEXES[0].name, platform.database_uri(), image_head("tracking")
    owner.execute(f"DROP INDEX {name}")
    blocker = _writer_in_a_transaction(uri)
    ended: list[Exception] = []
    builder = threading.Thread(target=lambda: _tune_catching(uri, ended))
    builder.start()
    seen: dict[str, object] = {}

    def migrate(*_):
        with connect(uri) as other:
            seen["build"] = tuning._building(other, name)
            seen["lock free"] = other.execute(tuning._LOCK).fetchone()[0]
        owner.execute("UPDATE alembic_version SET version_num = %s", (head,))

    try:
        assert _wait(lambda: tuning._building(owner, name) is not None), "the build never started"
        _stamp_back(owner, head)
        lines: list[str] = []
        coordinated_upgrade(uri, None, StoppedByOperator(), _NoBackup(), log=lines.append, migrate=migrate)
    finally:
        owner.execute("UPDATE alembic_version SET version_num = %s", (head,))
        blocker.rollback()
        blocker.close()
        builder.join(timeout=60)
    assert seen == {"build": None, "lock free": False}
    assert any("ended 1 session(s)" in line for line in lines), lines
    assert ended and "ended while building" in str(ended[0]) and "administrator command" in str(ended[0])
    assert owner.execute(tuning._LOCK).fetchone()[0]  # released when the upgrade was over
    owner.execute(tuning._UNLOCK)
    apply_tuning(owner, log=lambda _: None)
    assert _valid(owner) == {index.name: True for index in INDEXES}


def _tune_catching(uri: str, errors_seen: list[Exception]) -> None:
    try:
        with connect(uri) as conn:
            apply_tuning(conn, log=lambda _: None)
    except Exception as exc:  # the session the upgrade ends
        errors_seen.append(exc)


@pytest.mark.parametrize("budget", [0, -1, float("nan"), float("inf")])
def test_a_budget_that_is_no_number_of_seconds_is_refused_before_anything(budget: float) -> None:
    with pytest.raises(RunbookError, match="must be a positive number of seconds"):
        apply_tuning(None, log=lambda _: None, budget=budget)  # type: ignore[arg-type]


def _stamp_back(conn, head: str) -> None:
    """The tracking schema one revision behind the image: an upgrade to do."""
    from mlflow_platform.database.revisions import _scripts

    conn.execute(
        "UPDATE alembic_version SET version_num = %s", (_scripts("tracking").get_revision(head).down_revision,)
    )


class _NoBackup:
    def __init__(self, wait: float = 0):
        self.wait = wait

    def take(self, *_):
        time.sleep(self.wait)
        return ["(none)"]

    def restore_command(self, taken):
        return ""


def test_the_upgrades_hold_on_the_tuning_lock_survives_an_idle_session_timeout(platform, owner, monkeypatch) -> None:
    """Found by review: the session holding the lock sits idle through the backup (an RDS snapshot
    may take an hour); a role's idle_session_timeout ended it, so the lock was gone mid-migration and
    the unlock's error turned a good migration into an unrecorded failure."""
    from mlflow_platform.database.revisions import image_head
    from mlflow_platform.database.upgrade import StoppedByOperator, coordinated_upgrade

    uri, head = platform.database_uri(), image_head("tracking")
    monkeypatch.setenv("PGOPTIONS", "-c idle_session_timeout=1s")  # every new session of this process
    held = []

    def migrate(*_):
        with connect(uri) as other:
            held.append(not other.execute(tuning._LOCK).fetchone()[0])
        owner.execute("UPDATE alembic_version SET version_num = %s", (head,))

    _stamp_back(owner, head)
    try:
        outcome = coordinated_upgrade(uri, None, StoppedByOperator(), _NoBackup(2.5), log=lambda _: None,
                                      migrate=migrate)  # fmt: skip
    finally:
        owner.execute("UPDATE alembic_version SET version_num = %s", (head,))
    assert held == [True] and outcome.after == outcome.before


def test_a_build_this_role_may_not_end_stops_the_upgrade_cleanly(platform, owner) -> None:
    """Another role's tuner (a DBA's `db tune` as a superuser): the owner may not terminate it. The
    upgrade must change nothing, let the writers serve again, and name the session."""
    from mlflow_platform.database.revisions import image_head
    from mlflow_platform.database.upgrade import StoppedByOperator, coordinated_upgrade
    from mlflow_platform.errors import UpgradeError

    uri, head = platform.database_uri(), image_head("tracking")
    superuser = platform._postgres(platform.state.ports).connect(platform.config.database.tracking_database)
    superuser.execute("SELECT set_config('application_name', %s, false)", (tuning.TUNER,))
    writers, migrated = StoppedByOperator(), []
    resumed: list = []
    writers.resume = resumed.append
    _stamp_back(owner, head)
    try:
        with pytest.raises(
            UpgradeError, match=r"a session of role postgres \(pid \d+\) is building .*nothing was migrated"
        ):
            coordinated_upgrade(uri, None, writers, _NoBackup(), log=lambda _: None, migrate=migrated.append)
    finally:
        owner.execute("UPDATE alembic_version SET version_num = %s", (head,))
        superuser.close()
    assert migrated == [] and len(resumed) == 1
