"""The platform's tuning of MLflow's tracking database, beside MLflow's schema and never in it.

Each index here was chosen from ``EXPLAIN (ANALYZE, BUFFERS)`` of the queries MLflow 3.17 sends
(captured with auto_explain by ``benchmarks/data_scale.py``), and each is measured there before
and after. They carry the ``mlflow_platform_`` prefix so nobody mistakes them for MLflow's, are
built ``CONCURRENTLY`` (writers keep writing while a large table is indexed), and are ensured by
the migration step after MLflow's own migrations on every deploy: one a migration dropped comes
back; an interrupted build (left INVALID) is dropped and built again, unless its build is still
running; a retired one (``RETIRED``) is dropped. One tuner at a time (an advisory lock), whose
builds a deploy bounds in time, a killed client cancels, and a schema upgrade ends
(``tuners_stopped``). The upgrade drill proves they survive MLflow's migrations from 2.18 and 3.10.

Not kept: a covering index on metrics (run_uuid, key, step, timestamp, value, is_nan) for the
sampled charts. At 101M metric rows it took 9.2 GB and made a 1M-step history read 10% faster
than MLflow 3.17's own (run_uuid, key, step) index does, and a short run's not at all.

Per-table autovacuum: PostgreSQL's defaults vacuum a table when 20% of it is dead, i.e. after 20M
deleted metric rows at 100M, and refresh the visibility map (what makes index-only scans cheap)
only after inserts of 20% of the table. The hot tables get 1%.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import psycopg
from psycopg import sql

from ..errors import RunbookError, first_line

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
_LOCK_KEY = "hashtext('mlflow_platform.tuning')"
_LOCK = f"SELECT pg_try_advisory_lock({_LOCK_KEY})"
_UNLOCK = f"SELECT pg_advisory_unlock({_LOCK_KEY})"
#: A tuner's session names itself so that a schema upgrade can find and end it.
TUNER = "mlflow-platform tuning"
#: ALTER TABLE and DROP INDEX wait for no one longer than this (a long autovacuum holds the lock
#: ALTER TABLE needs). CREATE INDEX CONCURRENTLY waits for older transactions by design: it is
#: bounded by the caller's ``budget`` (the deploy's Job has a deadline), not by this.
LOCK_TIMEOUT = "5s"
#: PostgreSQL notices a client that went away (a killed Job pod) only when it next talks to it, so
#: a build would run on for hours holding the one-tuner lock. With this set (PostgreSQL 14+) the
#: backend checks the socket while it works and cancels the build within this long.
CLIENT_CHECK = "5s"
#: statement_timeout's largest value (an int of milliseconds); a larger budget is no bound anyway.
MAX_TIMEOUT_SECONDS = 2_147_483
#: Names the platform once shipped and retired (a changed definition takes a new name; the old
#: name goes here). Only these are dropped: any other ``mlflow_platform_*`` index is somebody's own.
RETIRED: tuple[str, ...] = ()


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
    actions = [f"set autovacuum on {table}: {_settings_text(missing)}" for table, missing in _untuned(conn).items()]
    existing = _existing(conn)
    actions += [f"drop index {name} concurrently (retired)" for name in _retired(existing)]
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
    return actions


def _retired(existing: dict[str, bool]) -> list[str]:
    return sorted(set(existing) & set(RETIRED))


def _untuned(conn: psycopg.Connection) -> dict[str, dict[str, str]]:
    """Per hot table, the autovacuum settings it lacks. A value someone set differently (a DBA's
    own choice for that table) is kept: only a missing one is set."""
    found = {table: _autovacuum(conn, table) for table in HOT_TABLES}
    missing = {table: {k: v for k, v in AUTOVACUUM.items() if k not in have} for table, have in found.items()}
    return {table: settings for table, settings in missing.items() if settings}


def _settings_text(settings: dict[str, str]) -> str:
    return ", ".join(f"{k} = {v}" for k, v in settings.items())


def _autovacuum(conn: psycopg.Connection, table: str) -> dict[str, str]:
    row = conn.execute("SELECT reloptions FROM pg_class WHERE oid = to_regclass(%s)", (table,)).fetchone()
    options = dict(o.split("=", 1) for o in (row[0] or [])) if row else {}
    return {k: v for k, v in options.items() if k in AUTOVACUUM}


@contextmanager
def _one_tuner(conn: psycopg.Connection) -> Iterator[None]:
    name = conn.execute("SELECT current_setting('application_name')").fetchone()[0]
    conn.execute("SELECT set_config('application_name', %s, false)", (TUNER,))
    _check_client(conn, CLIENT_CHECK)
    try:
        if not conn.execute(_LOCK).fetchone()[0]:
            raise RunbookError(
                "another tuner (a deploy's migration step or `db tune`) is working on this database; "
                "nothing was changed: run it again when that one has finished"
            )
        try:
            yield
        finally:
            if not conn.closed:
                conn.execute(_UNLOCK)
    finally:
        if not conn.closed:  # the session is a tuner only while it tunes
            conn.execute("SELECT set_config('application_name', %s, false)", (name,))
            _check_client(conn, "0")


def _check_client(conn: psycopg.Connection, interval: str) -> None:
    with suppress(psycopg.errors.UndefinedObject):  # PostgreSQL before 14: such a build runs to its end
        conn.execute(sql.SQL("SET client_connection_check_interval = {}").format(sql.Literal(interval)))


def apply_tuning(
    conn: psycopg.Connection, log: Log = print, *, build: bool = True, budget: float | None = None
) -> list[str]:
    """Ensure every autovacuum setting and index; returns what was planned. ``conn`` is the tables'
    owner's, in autocommit (CREATE INDEX CONCURRENTLY refuses to run in a transaction).

    Without ``build``, missing indexes are only reported (the caller's writers are stopped, and a
    build on a large table would keep them stopped). ``budget`` bounds all builds together, in
    seconds: a build still running then is cancelled and its half-built index dropped. One index
    that fails does not stop the others; RunbookError names every one that failed, at the end."""
    if budget is not None and not (0 < budget < math.inf):
        raise RunbookError(f"the index build budget must be a positive number of seconds, not {budget}")
    deadline = None if budget is None else time.monotonic() + budget
    with _one_tuner(conn):
        done = plan_tuning(conn)
        _set_autovacuum(conn)
        failed = {}
        for index in INDEXES:
            try:
                _ensure(conn, index, log, build, deadline)
            except (psycopg.Error, RunbookError) as exc:
                why = failed[index.name] = first_line(exc)
                if conn.closed:  # e.g. ended by a schema upgrade (``tuners_stopped``)
                    raise RunbookError(f"the tuner's session ended while building {index.name}: {why}") from None
                log(f"index     {index.name}: not built ({why})")
                _drop_invalid_if_free(conn, index.name, log)
    if failed:
        names = "; ".join(f"{name}: {why}" for name, why in failed.items())
        raise RunbookError(f"{len(failed)} of {len(INDEXES)} indexes not built ({names}); the rest is in place")
    return done


def _set_autovacuum(conn: psycopg.Connection) -> None:
    with _lock_timeout(conn):
        for table, settings in _untuned(conn).items():
            text = sql.SQL(", ").join(sql.SQL(f"{k} = {v}") for k, v in settings.items())
            conn.execute(sql.SQL("ALTER TABLE {} SET ({})").format(sql.Identifier(table), text))
        for name in _retired(_existing(conn)):
            if not _building(conn, name):
                conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(name)))


@contextmanager
def _lock_timeout(conn: psycopg.Connection) -> Iterator[None]:
    conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
    try:
        yield
    finally:
        if not conn.closed:
            conn.execute("RESET lock_timeout")


def _ensure(conn: psycopg.Connection, index: Index, log: Log, build: bool, deadline: float | None) -> None:
    valid = _existing(conn).get(index.name)
    if valid or (valid is False and _building(conn, index.name)):
        return
    if not build:
        log(f"index     {index.name}: not built now (writers are stopped); the next deploy or `db tune` builds it")
        return
    _drop_invalid(conn, index.name)
    remaining = None if deadline is None else deadline - time.monotonic()
    if remaining is not None and remaining <= 1:
        raise RunbookError("not started: the time for index builds ran out")
    log(f"index     {index.name}: building concurrently")
    timeout = "0" if remaining is None else f"{int(min(remaining, MAX_TIMEOUT_SECONDS) * 1000)}ms"
    conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(timeout)))
    try:
        conn.execute(index.create())
    finally:
        if not conn.closed:  # an ended session: its error is the one to report
            conn.execute("RESET statement_timeout")


def _drop_invalid(conn: psycopg.Connection, name: str) -> None:
    """An interrupted build leaves an INVALID index that writers still maintain and the planner never uses."""
    if _existing(conn).get(name) is False and not _building(conn, name):
        with _lock_timeout(conn):
            conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(name)))


def _drop_invalid_if_free(conn: psycopg.Connection, name: str, log: Log) -> None:
    try:
        _drop_invalid(conn, name)
    except psycopg.Error as exc:  # e.g. the transaction the build waited for is still open
        log(f"index     {name}: its invalid index is left to the next tuning ({first_line(exc)})")


@contextmanager
def tuners_stopped(conn: psycopg.Connection, log: Log) -> Iterator[None]:
    """For a schema upgrade (writers stopped): end every tuner's session and every build of one of
    our indexes, and keep tuners out until the upgrade is over. A migration's ALTER TABLE would
    otherwise wait behind a build for as long as the build takes, with every writer stopped. An
    ended build leaves an invalid index, which the next deploy or `db tune` builds again.

    The session holding the lock sits idle through the backup and the migration (an RDS snapshot
    may take an hour), so a role's idle_session_timeout would end it and free the lock: it is
    turned off for this session."""
    with suppress(psycopg.errors.UndefinedObject):  # PostgreSQL before 14 has no such timeout
        conn.execute("SET idle_session_timeout = 0")
    for attempt in range(3):  # a tuner may start between the ending and the lock
        _end_tuners(conn, log)
        if conn.execute(_LOCK).fetchone()[0]:
            break
        time.sleep(1 + attempt)
    else:
        raise RunbookError("a tuner keeps taking the tuning lock back; stop `db tune` runs and try again")
    try:
        yield
    finally:
        with suppress(psycopg.Error):  # an ended session has released its advisory locks already
            conn.execute(_UNLOCK)


def _end_tuners(conn: psycopg.Connection, log: Log) -> None:
    """Terminate every tuner session and builder of our indexes in this database. A role may end
    its own role's sessions; the RDS master user (rds_superuser) any non-superuser's. One that
    cannot be ended is named, with what to do."""
    sessions = conn.execute(
        "SELECT pid, usename FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND (application_name = %s OR pid IN (SELECT p.pid FROM pg_stat_progress_create_index p "
        "JOIN pg_class c ON c.oid = p.index_relid WHERE c.relname LIKE %s))",
        (TUNER, PREFIX.replace("_", r"\_") + "%"),
    ).fetchall()
    for pid, role in sessions:
        try:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        except psycopg.errors.InsufficientPrivilege:
            raise RunbookError(
                f"a session of role {role} (pid {pid}) is building the platform's indexes and this role may not "
                "end it: wait for it, or run the upgrade as the database's master user"
            ) from None
    if sessions:
        pids = [pid for pid, _ in sessions]
        _wait_gone(conn, pids)  # its locks go with its exit, not with the signal
        log(f"tuning    ended {len(sessions)} session(s) building the platform's indexes (pids {pids})")


def _wait_gone(conn: psycopg.Connection, pids: list[int], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)).fetchone():
            return
        time.sleep(0.1)


def remove_tuning(conn: psycopg.Connection) -> list[str]:
    """Drop our indexes and reset the autovacuum settings: MLflow's schema alone (the benchmark's
    baseline, and the way back if an index ever misleads the planner)."""
    with _one_tuner(conn):
        dropped = [name for name in _existing(conn) if name in {i.name for i in INDEXES} | set(RETIRED)]
        for name in dropped:
            conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(name)))
        for table in HOT_TABLES:  # only the values that are ours: a DBA's own stay
            ours = [k for k, v in _autovacuum(conn, table).items() if v == AUTOVACUUM[k]]
            if ours:
                names = sql.SQL(", ").join(sql.SQL(k) for k in ours)
                conn.execute(sql.SQL("ALTER TABLE {} RESET ({})").format(sql.Identifier(table), names))
    return dropped
