"""The database's monthly review as one read: what the guide asks on-call to look at by hand.

- the slowest statements, by total and by mean time, from ``pg_stat_statements`` (the stack
  preloads it in the RDS parameter group; the local PostgreSQL starts with it too);
- each table's size with its indexes, live and dead rows, and when (auto)vacuum last ran;
- indexes never scanned since statistics were reset (primary keys and unique ones excepted:
  they enforce something);
- growth since the previous report: every report records its table sizes in the tracking
  database, in a schema of the platform's own (``mlflow_platform``), so the next one, from any
  machine, can compare.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from ..errors import first_line

SCHEMA = "mlflow_platform"


@dataclass
class Statement:
    query: str
    calls: int
    total_s: float
    mean_ms: float
    rows: int
    read_blocks: int


@dataclass
class TableSize:
    table: str
    total_bytes: int
    index_bytes: int
    live_rows: int
    dead_rows: int
    last_vacuum: datetime | None
    grown_bytes: int | None = None

    @property
    def dead_share(self) -> float:
        rows = self.live_rows + self.dead_rows
        return self.dead_rows / rows if rows else 0.0


@dataclass
class UnusedIndex:
    table: str
    index: str
    bytes: int


@dataclass
class DatabaseReport:
    database: str
    database_bytes: int
    statements_available: str | None  # None, or why pg_stat_statements could not be read
    slowest_total: list[Statement] = field(default_factory=list)
    slowest_mean: list[Statement] = field(default_factory=list)
    tables: list[TableSize] = field(default_factory=list)
    unused_indexes: list[UnusedIndex] = field(default_factory=list)
    previous: datetime | None = None


_STATEMENTS = """
SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 400), calls, total_exec_time / 1000.0,
       mean_exec_time, rows, shared_blks_read
  FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
 WHERE d.datname = current_database()
 ORDER BY {order} DESC LIMIT %s
"""

_TABLES = """
SELECT c.relname, pg_total_relation_size(c.oid), pg_indexes_size(c.oid),
       coalesce(s.n_live_tup, 0), coalesce(s.n_dead_tup, 0),
       greatest(s.last_vacuum, s.last_autovacuum)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
 WHERE n.nspname = current_schema() AND c.relkind = 'r'
 ORDER BY pg_total_relation_size(c.oid) DESC
"""

_UNUSED = """
SELECT s.relname, s.indexrelname, pg_relation_size(s.indexrelid)
  FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid
 WHERE s.schemaname = current_schema() AND s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary
 ORDER BY pg_relation_size(s.indexrelid) DESC
"""


def _statements(conn: psycopg.Connection, order: str, limit: int) -> list[Statement]:
    rows = conn.execute(_STATEMENTS.format(order=order), (limit,)).fetchall()
    return [Statement(q, int(c), round(t, 2), round(m, 2), int(r), int(b)) for q, c, t, m, r, b in rows]


def _read_statements(conn: psycopg.Connection, report: DatabaseReport, limit: int) -> None:
    installed = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'").fetchone()
    if not installed:
        report.statements_available = (
            "pg_stat_statements is not installed in this database: the migration step creates it "
            "(`mlflow-platform db prepare`); it must also be in shared_preload_libraries"
        )
        return
    try:
        report.slowest_total = _statements(conn, "total_exec_time", limit)
        report.slowest_mean = _statements(conn, "mean_exec_time", limit)
    except psycopg.Error as exc:  # not preloaded, or no pg_read_all_stats: say so, report the rest
        report.statements_available = first_line(exc)


def _record_sizes(conn: psycopg.Connection, tables: list[TableSize]) -> datetime | None:
    """Store this report's sizes; return when the previous report was taken (None: the first),
    filling each table's growth since then."""
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {SCHEMA}.table_sizes (taken_at timestamptz NOT NULL, "
        "table_name text NOT NULL, total_bytes bigint NOT NULL, PRIMARY KEY (taken_at, table_name))"
    )
    row = conn.execute(f"SELECT max(taken_at) FROM {SCHEMA}.table_sizes").fetchone()
    previous = row[0] if row else None
    if previous is not None:
        before = dict(
            conn.execute(
                f"SELECT table_name, total_bytes FROM {SCHEMA}.table_sizes WHERE taken_at = %s", (previous,)
            ).fetchall()
        )
        for table in tables:
            table.grown_bytes = table.total_bytes - before.get(table.table, 0)
    with conn.transaction():
        now = conn.execute("SELECT now()").fetchone()[0]
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {SCHEMA}.table_sizes VALUES (%s, %s, %s)",
                [(now, t.table, t.total_bytes) for t in tables],
            )
    return previous


def database_report(conn: psycopg.Connection, *, limit: int = 10, record: bool = True) -> DatabaseReport:
    """Read the report; with ``record``, also store the sizes for the next report's growth."""
    name, size = conn.execute("SELECT current_database(), pg_database_size(current_database())").fetchone()
    report = DatabaseReport(name, size, None)
    _read_statements(conn, report, limit)
    report.tables = [TableSize(*row) for row in conn.execute(_TABLES).fetchall()]
    report.unused_indexes = [UnusedIndex(*row) for row in conn.execute(_UNUSED).fetchall()]
    if record:
        report.previous = _record_sizes(conn, report.tables)
    return report
