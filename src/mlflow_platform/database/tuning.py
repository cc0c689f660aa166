"""The platform's tuning of MLflow's tracking database, beside MLflow's schema and never in it.

Each index here was chosen from ``EXPLAIN (ANALYZE, BUFFERS)`` of the queries MLflow 3.17 sends
(captured with auto_explain by ``benchmarks/data_scale.py``), and each is measured there before
and after. They carry the ``mlflow_platform_`` prefix so nobody mistakes them for MLflow's, are
built ``CONCURRENTLY`` (writers keep writing while a large table is indexed), and are ensured by
the migration step after MLflow's own migrations on every deploy: one a migration dropped comes
back; an interrupted build (left INVALID) is dropped and built again, unless its build is still
running; one of ours that is no longer listed here is dropped (a changed definition takes a new
name). One tuner at a time (an advisory lock). The upgrade drill proves they survive MLflow's
migrations from 2.18 and 3.10.

Not kept: a covering index on metrics (run_uuid, key, step, timestamp, value, is_nan) for the
sampled charts. At 101M metric rows it took 9.2 GB and made a 1M-step history read 10% faster
than MLflow 3.17's own (run_uuid, key, step) index does, and a short run's not at all.

Per-table autovacuum: PostgreSQL's defaults vacuum a table when 20% of it is dead, i.e. after 20M
deleted metric rows at 100M, and refresh the visibility map (what makes index-only scans cheap)
only after inserts of 20% of the table. The hot tables get 1%.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql

from ..errors import RunbookError

PREFIX = "mlflow_platform_"


@dataclass(frozen=True)
class Index:
    name: str
    table: str
    definition: str  # what follows "ON <table>"
    why: str

    def create(self) -> sql.Composed:
        return sql.SQL("CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} ").format(
            sql.Identifier(self.name), sql.Identifier(self.table)
        ) + sql.SQL(self.definition)


INDEXES = (
    Index(
        f"{PREFIX}runs_experiment_start",
        "runs",
        "(experiment_id, lifecycle_stage, start_time DESC, run_uuid)",
        "an experiment's runs newest first (every filtered search orders so): MLflow has no index on "
        "runs.experiment_id, so each search sorted all of an experiment's runs",
    ),
    Index(
        f"{PREFIX}runs_experiment_order",
        "runs",
        "(experiment_id, lifecycle_stage, (CASE WHEN start_time IS NULL THEN 1 ELSE 0 END), start_time DESC, run_uuid)",
        "the UI's experiment page: MLflow orders by (start_time IS NULL) first, which only an index on that "
        "expression can deliver presorted",
    ),
    Index(
        f"{PREFIX}params_value",
        "params",
        "USING hash (value)",
        "param filters (params.x = 'v'): a hash index, because a B-tree entry must fit in a third of a page "
        "and a param value may be 8,000 bytes",
    ),
    Index(
        f"{PREFIX}tags_value",
        "tags",
        "USING hash (value)",
        "tag filters on a value, above all the run-name lookup (tags.mlflow.runName = 'x'): MLflow's "
        "tag indexes are (key, run_uuid) and (run_uuid), so the filter read that tag of every run "
        "(through the server at 1M runs: p95 18 -> 14 ms at 1 client, 124 -> 102 ms at 8)",
    ),
    Index(
        f"{PREFIX}latest_metrics_value",
        "latest_metrics",
        "(key, run_uuid) INCLUDE (value, is_nan)",
        "metric filters and ordering by a metric (metrics.acc > 0.9 ORDER BY metrics.acc): MLflow's key "
        "(key, run_uuid) has no value, so each of a key's million rows was fetched from the table; with "
        "the value included they are read from the index alone (EXPLAIN ANALYZE at 1M runs: 1,258 -> 211 ms)",
    ),
)

#: Tables that grow with every run logged; their autovacuum acts at 1% instead of 20%.
HOT_TABLES = ("metrics", "latest_metrics", "params", "tags", "runs")
AUTOVACUUM = {
    "autovacuum_vacuum_scale_factor": "0.01",
    "autovacuum_analyze_scale_factor": "0.01",
    "autovacuum_vacuum_insert_scale_factor": "0.01",
}

Log = Callable[[str], None]


#: One tuner at a time per database (a deploy's migration step, an operator's `db tune`): a second
#: one would take the first one's half-built index for an interrupted build and drop it.
_LOCK = "SELECT pg_try_advisory_lock(hashtext('mlflow_platform.tuning'))"
_UNLOCK = "SELECT pg_advisory_unlock(hashtext('mlflow_platform.tuning'))"
#: ALTER TABLE and DROP INDEX wait for no one longer than this (a long autovacuum holds the lock
#: ALTER TABLE needs); CREATE INDEX CONCURRENTLY is not bounded: it waits for older transactions
#: by design, and an interrupted build only leaves an invalid index to build again.
LOCK_TIMEOUT = "5s"


def _existing(conn: psycopg.Connection) -> dict[str, bool]:
    """Our indexes in the database: name -> valid (False: an interrupted concurrent build)."""
    rows = conn.execute(
        "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relname LIKE %s",
        (PREFIX.replace("_", r"\_") + "%",),
    ).fetchall()
    return dict(rows)


def _building(conn: psycopg.Connection, name: str) -> int | None:
    """The backend still building ``name`` (an invalid index is also what a build in progress
    looks like, e.g. one whose client was killed: PostgreSQL goes on building)."""
    row = conn.execute(
        "SELECT pid FROM pg_stat_progress_create_index WHERE index_relid = to_regclass(%s)", (name,)
    ).fetchone()
    return row[0] if row else None


def plan_tuning(conn: psycopg.Connection) -> list[str]:
    """What ``apply_tuning`` would do, in words (the dry run)."""
    existing = _existing(conn)
    actions = []
    for index in INDEXES:
        if existing.get(index.name) is False:
            pid = _building(conn, index.name)
            actions.append(
                f"leave {index.name} to the build in progress (pid {pid})"
                if pid
                else f"drop the invalid index {index.name} (an interrupted build) and build it again"
            )
        elif index.name not in existing:
            actions.append(f"create index {index.name} on {index.table} concurrently")
    for name in _retired(existing):
        actions.append(f"drop index {name} concurrently (no longer one of the platform's)")
    for table in _untuned_tables(conn):
        actions.append(f"set autovacuum on {table} to 1% ({', '.join(AUTOVACUUM)})")
    return actions


def _retired(existing: dict[str, bool]) -> list[str]:
    """Ours by name but no longer in INDEXES: dropped, so that a definition that changes does so
    under a new name (``IF NOT EXISTS`` would keep the old one forever)."""
    return sorted(set(existing) - {index.name for index in INDEXES})


def _untuned_tables(conn: psycopg.Connection) -> list[str]:
    return [table for table in HOT_TABLES if _autovacuum(conn, table) != AUTOVACUUM]


def _autovacuum(conn: psycopg.Connection, table: str) -> dict[str, str]:
    row = conn.execute("SELECT reloptions FROM pg_class WHERE oid = to_regclass(%s)", (table,)).fetchone()
    options = dict(o.split("=", 1) for o in (row[0] or [])) if row else {}
    return {k: v for k, v in options.items() if k in AUTOVACUUM}


@contextmanager
def _one_tuner(conn: psycopg.Connection) -> Iterator[None]:
    if not conn.execute(_LOCK).fetchone()[0]:
        raise RunbookError(
            "another tuner (a deploy's migration step or `db tune`) is working on this database; "
            "nothing was changed: run it again when that one has finished"
        )
    try:
        yield
    finally:
        conn.execute(_UNLOCK)


def apply_tuning(conn: psycopg.Connection, log: Log = print, *, build: bool = True) -> list[str]:
    """Ensure every index and autovacuum setting; returns what was planned. ``conn`` is the tables'
    owner's, in autocommit (CREATE INDEX CONCURRENTLY refuses to run in a transaction). Without
    ``build``, indexes that are missing are only reported (the caller's writers are stopped, and a
    build on a large table would keep them stopped)."""
    with _one_tuner(conn):
        done = plan_tuning(conn)
        for index in INDEXES:
            _ensure(conn, index, log, build)
        conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
        for name in _retired(_existing(conn)):
            if not _building(conn, name):
                conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(name)))
        settings = sql.SQL(", ").join(sql.SQL(f"{k} = {v}") for k, v in AUTOVACUUM.items())
        for table in _untuned_tables(conn):
            conn.execute(sql.SQL("ALTER TABLE {} SET ({})").format(sql.Identifier(table), settings))
        conn.execute("RESET lock_timeout")
    return done


def _ensure(conn: psycopg.Connection, index: Index, log: Log, build: bool) -> None:
    valid = _existing(conn).get(index.name)
    if valid or (valid is False and _building(conn, index.name)):
        return
    if not build:
        log(f"index     {index.name}: not built now (writers are stopped); the next deploy or `db tune` builds it")
        return
    if valid is False:
        conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
        conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(index.name)))
        conn.execute("RESET lock_timeout")
    log(f"index     {index.name}: building concurrently")
    conn.execute(index.create())


def remove_tuning(conn: psycopg.Connection) -> list[str]:
    """Drop our indexes and reset the autovacuum settings: MLflow's schema alone (the benchmark's
    baseline, and the way back if an index ever misleads the planner)."""
    with _one_tuner(conn):
        dropped = list(_existing(conn))
        for name in dropped:
            conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(name)))
        names = sql.SQL(", ").join(sql.SQL(k) for k in AUTOVACUUM)
        for table in HOT_TABLES:
            conn.execute(sql.SQL("ALTER TABLE {} RESET ({})").format(sql.Identifier(table), names))
    return dropped
