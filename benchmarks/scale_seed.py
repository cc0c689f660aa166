"""A tracking database at the size its users live at, built inside PostgreSQL in minutes.

Through MLflow's API a million runs take hours and measure the client; here every row is made by
``generate_series`` in MLflow's own tables (the schema the installed MLflow migrated), with the
bulk-load practice PostgreSQL documents ("Populating a Database": drop indexes and foreign keys,
load, re-create them): the indexes and constraints are read from the catalog first and put back
exactly, so the result is MLflow's schema, byte for byte in definition. ``verify`` then reads a
sample back through MLflow's own client, so a row MLflow could not read is found before it is
measured.

Shape (every count is a parameter of :class:`Size`):
- ``experiments`` experiments; ``big_share`` of the runs in one of them (a team's sweep folder);
- per run: 3 tags (``team``, ``mlflow.runName``, ``mlflow.user``), 5 params, 5 metrics each with
  ``steps`` history points (so metric rows = runs x 5 x steps) and its latest value;
- one run with a metric of ``long_history`` steps (a long training job);
- ``deleted`` runs deleted 40 days ago, waiting for ``gc``; ``stale`` finished runs 120 days old in
  their own experiment, for ``cleanup-runs``;
- ``models`` registered models with ``versions`` versions each and a ``@champion`` alias.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import psycopg

DAY_MS = 86_400_000
METRICS_PER_RUN = 5
PARAMS_PER_RUN = 5
TEAMS = ("vision", "nlp", "ranking", "forecasting", "search", "ads", "fraud", "speech")
#: The run holding the long history, and the experiments the runbooks' figures use.
LONG_RUN = "f" * 32
STALE_EXPERIMENT = "/platform/scale/stale"
BIG_EXPERIMENT = "/platform/scale/big"
#: Tables loaded in bulk: their indexes and foreign keys are dropped first and re-created after.
BULK_TABLES = ("runs", "tags", "params", "metrics", "latest_metrics")

Log = Callable[[str], None]


@dataclass(frozen=True)
class Size:
    runs: int = 1_000_000
    steps: int = 20
    experiments: int = 200
    big_share: float = 0.2
    long_history: int = 1_000_000
    deleted: int = 100_000
    stale: int = 100_000
    models: int = 2_000
    versions: int = 5
    batch: int = 50_000

    @property
    def metric_rows(self) -> int:
        return self.runs * METRICS_PER_RUN * self.steps + self.long_history

    def as_dict(self) -> dict:
        return {**asdict(self), "metric_rows": self.metric_rows}


def _now_ms() -> int:
    return int(time.time() * 1000)


def seed(conn: psycopg.Connection, size: Size, log: Log = print) -> dict[str, float]:
    """Fill an empty, migrated tracking database; returns seconds per phase."""
    timings: dict[str, float] = {}

    def phase(name: str, work: Callable[[], None]) -> None:
        started = time.perf_counter()
        work()
        timings[name] = round(time.perf_counter() - started, 1)
        log(f"  {name:<22} {timings[name]:>8.1f} s")

    conn.execute("SET synchronous_commit = off")
    conn.execute("SET maintenance_work_mem = '1GB'")
    saved = _drop_indexes(conn)
    phase("experiments", lambda: _experiments(conn, size))
    phase("runs", lambda: _runs(conn, size))
    phase("tags+params", lambda: _tags_params(conn, size))
    phase("metrics", lambda: _metrics(conn, size, log))
    phase("indexes+keys", lambda: _restore_indexes(conn, saved))
    phase("registry", lambda: _registry(conn, size))
    phase("analyze", lambda: conn.execute("VACUUM (ANALYZE)"))
    return timings


def _drop_indexes(conn: psycopg.Connection) -> list[str]:
    """The DDL that re-creates every index and foreign key of the bulk tables (and the foreign
    keys pointing at them), after dropping them."""
    rows = conn.execute(
        """
        SELECT format('ALTER TABLE %%I DROP CONSTRAINT %%I', c.conrelid::regclass, c.conname),
               format('ALTER TABLE %%I ADD CONSTRAINT %%I %%s', c.conrelid::regclass, c.conname,
                      pg_get_constraintdef(c.oid)), c.contype
          FROM pg_constraint c
         WHERE c.contype IN ('p', 'f', 'u')
           AND (c.conrelid::regclass::text = ANY(%(t)s) OR c.confrelid::regclass::text = ANY(%(t)s))
        """,
        {"t": list(BULK_TABLES)},
    ).fetchall()
    # Foreign keys first (they depend on the primary keys), then the keys themselves.
    constraints = sorted(rows, key=lambda r: r[2] != "f")
    indexes = conn.execute(
        """
        SELECT format('DROP INDEX %%I', i.indexrelid::regclass), pg_get_indexdef(i.indexrelid)
          FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
         WHERE t.relname = ANY(%(t)s)
           AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
        """,
        {"t": list(BULK_TABLES)},
    ).fetchall()
    for drop, _create, *_ in [*constraints, *indexes]:
        conn.execute(drop)
    creates = [create for _drop, create, kind in constraints if kind != "f"]
    creates += [create for _drop, create in indexes]
    creates += [create for _drop, create, kind in constraints if kind == "f"]
    return creates


def _restore_indexes(conn: psycopg.Connection, creates: list[str]) -> None:
    for statement in creates:
        conn.execute(statement)


def _experiments(conn: psycopg.Connection, size: Size) -> None:
    now = _now_ms()
    conn.execute(
        """
        INSERT INTO experiments (name, artifact_location, lifecycle_stage, creation_time, last_update_time)
        SELECT CASE i WHEN 1 THEN %(big)s WHEN 2 THEN %(stale)s ELSE format('/platform/scale/exp-%%s', i) END,
               format('mlflow-artifacts:/scale/%%s', i), 'active', %(now)s - i * 3600000, %(now)s
          FROM generate_series(1, %(n)s) i
        """,
        {"big": BIG_EXPERIMENT, "stale": STALE_EXPERIMENT, "now": now, "n": size.experiments},
    )


def _experiment_ids(conn: psycopg.Connection) -> tuple[int, int, int, int]:
    """(big, stale, first other, last other) experiment ids."""
    big = conn.execute("SELECT experiment_id FROM experiments WHERE name = %s", (BIG_EXPERIMENT,)).fetchone()[0]
    stale = conn.execute("SELECT experiment_id FROM experiments WHERE name = %s", (STALE_EXPERIMENT,)).fetchone()[0]
    low, high = conn.execute(
        "SELECT min(experiment_id), max(experiment_id) FROM experiments WHERE name LIKE '/platform/scale/exp-%%'"
    ).fetchone()
    return big, stale, low, high


def _runs(conn: psycopg.Connection, size: Size) -> None:
    """Active runs (``big_share`` in the big experiment, the rest spread), then deleted ones,
    then the stale experiment's; run ``i`` has id ``md5(i)`` so every table can derive it."""
    big, stale, low, high = _experiment_ids(conn)
    now = _now_ms()
    big_runs = int(size.runs * size.big_share)
    active = size.runs - size.deleted - size.stale
    conn.execute(
        f"""
        INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status,
                          start_time, end_time, source_version, lifecycle_stage, artifact_uri,
                          experiment_id, deleted_time)
        SELECT md5(i::text), format('run-%%s', i), 'LOCAL', 'train.py', '', format('user%%s', i %% 50),
               CASE WHEN i %% 20 = 0 THEN 'FAILED' ELSE 'FINISHED' END,
               start, start + 1800000, '', stage,
               format('mlflow-artifacts:/scale/%%s/artifacts', md5(i::text)), exp,
               CASE WHEN stage = 'deleted' THEN %(now)s - 40 * {DAY_MS}::bigint END
          FROM (
            SELECT i,
                   CASE WHEN i <= %(active)s + %(deleted)s
                        THEN %(now)s - (i::bigint * 60000) %% (730 * {DAY_MS}::bigint)
                        ELSE %(now)s - 120 * {DAY_MS}::bigint - i END AS start,
                   CASE WHEN i > %(active)s AND i <= %(active)s + %(deleted)s THEN 'deleted' ELSE 'active' END AS stage,
                   CASE WHEN i > %(active)s + %(deleted)s THEN %(stale)s
                        WHEN i <= %(big_runs)s THEN %(big)s
                        ELSE %(low)s + i %% (%(high)s - %(low)s + 1) END AS exp
              FROM generate_series(1, %(runs)s) i
          ) r
        """,
        {
            "now": now,
            "active": active,
            "deleted": size.deleted,
            "stale": stale,
            "big": big,
            "big_runs": big_runs,
            "low": low,
            "high": high,
            "runs": size.runs,
        },
    )
    conn.execute(
        "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, start_time,"
        " end_time, source_version, lifecycle_stage, artifact_uri, experiment_id)"
        " VALUES (%s, 'long-training', 'LOCAL', 'train.py', '', 'user0', 'FINISHED', %s, %s, '', 'active',"
        " 'mlflow-artifacts:/scale/long/artifacts', %s)",
        (LONG_RUN, now - DAY_MS, now, big),
    )


def _tags_params(conn: psycopg.Connection, size: Size) -> None:
    teams = "ARRAY[" + ",".join(f"'{t}'" for t in TEAMS) + "]"
    conn.execute(
        f"""
        INSERT INTO tags (key, value, run_uuid)
        SELECT k.key, CASE k.key WHEN 'team' THEN ({teams})[1 + i %% {len(TEAMS)}]
                                 WHEN 'mlflow.runName' THEN format('run-%%s', i)
                                 ELSE format('user%%s', i %% 50) END, md5(i::text)
          FROM generate_series(1, %(runs)s) i, (VALUES ('team'), ('mlflow.runName'), ('mlflow.user')) k(key)
        """,
        {"runs": size.runs},
    )
    conn.execute(
        f"""
        INSERT INTO params (key, value, run_uuid)
        SELECT format('hp_%%s', k), ((i * (k + 7)) %% 97)::text, md5(i::text)
          FROM generate_series(1, %(runs)s) i, generate_series(0, {PARAMS_PER_RUN - 1}) k
        """,
        {"runs": size.runs},
    )


def _metrics(conn: psycopg.Connection, size: Size, log: Log) -> None:
    """``steps`` points of 5 metrics per run, in batches of runs; the latest value of each; then
    the long history. Values are deterministic so a filter selects a known share."""
    for first in range(1, size.runs + 1, size.batch):
        last = min(size.runs, first + size.batch - 1)
        conn.execute(
            f"""
            INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan)
            SELECT format('val_%%s', k), ((i * 31 + k * 17 + s) %% 1000) / 1000.0,
                   1700000000000 + i::bigint * 1000 + s, md5(i::text), s, false
              FROM generate_series(%(first)s::bigint, %(last)s::bigint) i, generate_series(0, {METRICS_PER_RUN - 1}) k,
                   generate_series(0, %(steps)s - 1) s
            """,
            {"first": first, "last": last, "steps": size.steps},
        )
        if (last // size.batch) % 5 == 0 or last == size.runs:
            log(f"    metrics: runs {last:,} of {size.runs:,}")
    conn.execute(
        f"""
        INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid)
        SELECT format('val_%%s', k), ((i * 31 + k * 17 + %(last)s) %% 1000) / 1000.0,
               1700000000000 + i::bigint * 1000 + %(last)s, %(last)s, false, md5(i::text)
          FROM generate_series(1, %(runs)s) i, generate_series(0, {METRICS_PER_RUN - 1}) k
        """,
        {"runs": size.runs, "last": size.steps - 1},
    )
    conn.execute(
        """
        INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan)
        SELECT 'loss', 1.0 / (1 + s), 1700000000000 + s, %(run)s, s, false FROM generate_series(0, %(n)s - 1) s
        """,
        {"run": LONG_RUN, "n": size.long_history},
    )
    conn.execute(
        "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid)"
        " VALUES ('loss', %s, %s, %s, false, %s)",
        (1.0 / size.long_history, 1700000000000 + size.long_history - 1, size.long_history - 1, LONG_RUN),
    )


def _registry(conn: psycopg.Connection, size: Size) -> None:
    now = _now_ms()
    conn.execute(
        "INSERT INTO registered_models (name, creation_time, last_updated_time, description)"
        " SELECT format('scale-model-%%s', m), %(now)s - m * 60000, %(now)s - m * 60000, ''"
        " FROM generate_series(1, %(n)s) m",
        {"now": now, "n": size.models},
    )
    conn.execute(
        """
        INSERT INTO model_versions (name, version, creation_time, last_updated_time, description, user_id,
                                    current_stage, source, run_id, status, status_message, run_link,
                                    storage_location)
        SELECT format('scale-model-%%s', m), v, %(now)s - (m * 60000) + v, %(now)s - (m * 60000) + v, '', 'user0',
               'None', format('models:/m-%%s', md5((m * 100 + v)::text)), md5((m * %(versions)s + v)::text),
               'READY', '', '', format('mlflow-artifacts:/scale/models/%%s/%%s', m, v)
          FROM generate_series(1, %(n)s) m, generate_series(1, %(versions)s) v
        """,
        {"now": now, "n": size.models, "versions": size.versions},
    )
    conn.execute(
        "INSERT INTO registered_model_aliases (alias, version, name)"
        " SELECT 'champion', %(versions)s, format('scale-model-%%s', m) FROM generate_series(1, %(n)s) m",
        {"n": size.models, "versions": size.versions},
    )


def database_size(conn: psycopg.Connection) -> dict[str, int]:
    """Bytes on disk: the whole database, and the metric tables with their indexes."""
    total = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    metrics = conn.execute("SELECT pg_total_relation_size('metrics')").fetchone()[0]
    rows = conn.execute("SELECT reltuples::bigint FROM pg_class WHERE relname = 'metrics'").fetchone()[0]
    return {"database_bytes": total, "metrics_bytes": metrics, "metric_rows_estimate": rows}
