"""`db tune` and `db report`: the database's upkeep at the size its users live at (registered on
the `db` group by ``cli/__init__``)."""

from __future__ import annotations

from typing import Annotated

import psycopg
import typer
from rich.markup import escape
from rich.table import Table

from ..database.report import DatabaseReport, Statement
from ..errors import RunbookError, first_line
from .connect import database_uri
from .options import DryRun, Local
from .output import fail, out, print_actions

OwnerUri = Annotated[
    str | None,
    typer.Option(
        envvar="MLFLOW_BACKEND_STORE_URI", help="The tracking database, as its owner (password via PGPASSWORD)."
    ),
]


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


def _statements(title: str, rows: list[Statement]) -> Table:
    table = Table("mean ms", "calls", "total s", "rows", "blocks read", "statement", title=title)
    for s in rows:
        table.add_row(
            f"{s.mean_ms:,.1f}",
            f"{s.calls:,}",
            f"{s.total_s:,.1f}",
            f"{s.rows:,}",
            f"{s.read_blocks:,}",
            escape(s.query[:160]),
        )
    return table


def print_report(report: DatabaseReport) -> None:
    out.print(f"[bold]{escape(report.database)}[/]: {_size(report.database_bytes)}")
    if report.statements_available:
        out.print(f"[yellow]statements not available:[/] {escape(report.statements_available)}")
    else:
        out.print(_statements("slowest by total time", report.slowest_total))
        out.print(_statements("slowest by mean time", report.slowest_mean))
    since = f"since {report.previous:%Y-%m-%d %H:%M} UTC" if report.previous else "(first report)"
    tables = Table("table", "total", "indexes", "live rows", "dead rows", "dead %", "last vacuum", f"growth {since}")
    for t in report.tables:
        vacuum = f"{t.last_vacuum:%Y-%m-%d %H:%M}" if t.last_vacuum else "never"
        tables.add_row(
            escape(t.table),
            _size(t.total_bytes),
            _size(t.index_bytes),
            f"{t.live_rows:,}",
            f"{t.dead_rows:,}",
            f"{100 * t.dead_share:.1f}",
            vacuum,
            _size(t.grown_bytes),
        )
    out.print(tables)
    if report.unused_indexes:
        unused = Table("table", "index", "size", title="indexes never scanned since statistics were reset")
        for u in report.unused_indexes:
            unused.add_row(escape(u.table), escape(u.index), _size(u.bytes))
        out.print(unused)


def tune_command(
    backend_store_uri: OwnerUri = None,
    dry_run: DryRun = False,
    undo: Annotated[bool, typer.Option("--undo", help="Drop the platform's indexes and settings instead.")] = False,
    local: Local = False,
) -> None:
    """Ensure the platform's indexes (built CONCURRENTLY: writers keep writing) and the hot tables'
    autovacuum settings. The migration step runs it on every deploy; run it by hand after a
    restore, or with --undo to go back to MLflow's schema alone.

    Example:
      mlflow-platform db tune --local --dry-run
    """
    from ..database.connection import connect
    from ..database.tuning import INDEXES, apply_tuning, plan_tuning, remove_tuning

    uri = database_uri(backend_store_uri, local)
    try:
        with connect(uri) as conn:
            if undo:
                names = [i.name for i in INDEXES] if dry_run else remove_tuning(conn)
                print_actions("db tune --undo", [f"drop index {n}" for n in names] + ["reset autovacuum"], dry_run)
                return
            actions = plan_tuning(conn)
            print_actions("db tune", actions or ["nothing to do: every index and setting is in place"], dry_run)
            if not dry_run and actions:
                apply_tuning(conn, log=out.print)
    except (psycopg.Error, RunbookError) as exc:
        raise fail(f"db tune: {first_line(exc)}") from None


def report_command(
    backend_store_uri: OwnerUri = None,
    top: Annotated[int, typer.Option(help="Statements to list by total and by mean time.")] = 10,
    record: Annotated[
        bool, typer.Option("--record/--no-record", help="Store table sizes for the next report's growth.")
    ] = True,
    local: Local = False,
) -> None:
    """The monthly database review: slowest statements (pg_stat_statements), table and index
    sizes with dead rows and last vacuum, never-used indexes, growth since the last report.

    Example:
      mlflow-platform db report --local
    """
    from ..database.connection import connect
    from ..database.report import database_report

    uri = database_uri(backend_store_uri, local)
    try:
        with connect(uri) as conn:
            report = database_report(conn, limit=top, record=record)
    except psycopg.Error as exc:
        raise fail(f"db report: {first_line(exc)}") from None
    print_report(report)


#: (name, function) registered on the `db` group.
COMMANDS = (("tune", tune_command), ("report", report_command))
