"""The restore drill: a backup counts only once it has been restored and found whole.

It restores the newest dump of the tracking database and the newest dump of the auth database
(each picked by the ``<database>-<stamp>.dump`` name ``backup_to_file`` gives it, and checked
against the database name pg_dump wrote inside) into scratch databases of their own, and compares
them with the live source: active runs, model versions and every ``@champion`` (also resolved by
MLflow's own registry store, as a restored server would); basic-auth's users (name, admin flag)
and every grant table. Whatever goes wrong is a problem in the report, not an exception; the
scratch databases are dropped afterwards unless kept.
"""

from __future__ import annotations

from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from ..aliases import CHAMPION
from ..errors import RunbookError, first_line
from .backup import drop_database, dump_database_name, dumped_database, newest_dump, pg_restore
from .connection import connect, with_database
from .revisions import image_head
from .workspace_mode import holds_team_data, workspace_mode

#: The tables the drill reads: a restored database without them holds no such schema.
TRACKING_NEEDS = ("experiments", "runs", "model_versions", "registered_model_aliases")
AUTH_NEEDS = ("users", "experiment_permissions", "registered_model_permissions")
#: MLflow's role tables (since 3.6 the source of truth for grants), beside every ``*_permissions`` table.
ROLE_TABLES = ("roles", "user_role_assignments")


@dataclass
class AuthDrill:
    backup: str
    scratch_database: str
    users: tuple[int, int] | None = None
    #: Per grant table: rows in the source, rows restored.
    grants: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass
class DrillReport:
    backup: str
    scratch_database: str
    #: Source, restored; None when the tracking dump could not be compared.
    runs: tuple[int, int] | None = None
    model_versions: tuple[int, int] | None = None
    champions: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    auth: AuthDrill | None = None
    #: Each dump restored, with the scratch database it went into.
    restored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


def restore_drill(
    uri: str,
    backup_dir: Path,
    *,
    auth_database: str | None = None,
    require_auth: bool = False,
    keep: bool = False,
) -> DrillReport:
    """Drill the newest dumps of ``uri``'s database and of ``auth_database`` (on the same server).
    No auth dump is a note, or a problem with ``require_auth``; no tracking dump is a RunbookError."""
    tracking = make_url(uri).database
    dump = newest_dump(backup_dir, tracking)
    if dump is None:
        raise RunbookError(_no_dump(backup_dir, tracking))
    stamp = datetime.now(UTC).strftime("%Y%m%d_%H%M%S_%f")
    report = DrillReport(str(dump), f"restore_drill_{stamp}")
    auth_dump = _pick_auth_dump(backup_dir, auth_database, require_auth, report)
    if auth_dump:
        report.auth = AuthDrill(str(auth_dump), f"restore_drill_{stamp}_auth")
    try:
        _drill_tracking(uri, dump, report)
        if auth_dump:
            _drill_auth(uri, auth_database, auth_dump, report)
    except psycopg.Error as exc:
        raise RunbookError(f"restore drill: {first_line(exc)}") from None
    finally:
        if not keep:
            _drop_scratch(uri, report)
    return report


def _no_dump(backup_dir: Path, database: str) -> str:
    others = sorted({dump_database_name(p) for p in backup_dir.glob("*.dump")}) if backup_dir.is_dir() else []
    held = f"; it holds dumps of {', '.join(others)} only" if others else ""
    return (
        f"no backup of {database} ({database}-*.dump) in {backup_dir}{held}; take one with `mlflow-platform db upgrade`"
    )


def _pick_auth_dump(backup_dir: Path, auth_database: str | None, required: bool, report: DrillReport) -> Path | None:
    dump = newest_dump(backup_dir, auth_database) if auth_database else None
    if dump is None:
        missing = f"no backup of {auth_database} ({auth_database}-*.dump) in {backup_dir}"
        if auth_database and required:
            report.problems.append(missing)
        else:
            reason = missing if auth_database else "no auth database named (--auth-database)"
            report.notes.append(f"the auth database was not drilled: {reason}")
    return dump


def _holds(dump: Path, database: str, report: DrillReport) -> bool:
    """Whether ``dump`` is a readable dump of ``database`` (by the name pg_dump wrote into it)."""
    try:
        held = dumped_database(dump)
    except RunbookError as exc:
        report.problems.append(str(exc))
        return False
    if held != database:
        report.problems.append(f"{dump.name} is a dump of database {held}, not of {database}: not restored")
    return held == database


def _restore_scratch(uri: str, scratch: str, dump: Path, report: DrillReport) -> str | None:
    """``dump`` restored into the new database ``scratch``; its URI, or None (a problem reported)."""
    with connect(uri) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
    result = pg_restore(uri, scratch, dump)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or [f"exit {result.returncode}"]
        report.problems.append(f"pg_restore of {dump.name} failed: {lines[-1][:300]}")
        return None
    report.restored.append(f"{dump.name} -> {scratch}")
    return with_database(uri, scratch)


def _tables(conn: psycopg.Connection) -> set[str]:
    query = "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
    return {row[0] for row in conn.execute(query)}


def _lacks(conn: psycopg.Connection, dump: Path, kind: str, needed: tuple[str, ...], report: DrillReport) -> bool:
    missing = [t for t in needed if t not in _tables(conn)]
    if missing:
        report.problems.append(f"{dump.name} holds no {kind} schema (no table {', '.join(missing)})")
    return bool(missing)


def _drop_scratch(uri: str, report: DrillReport) -> None:
    scratches = [report.scratch_database, *([report.auth.scratch_database] if report.auth else [])]
    try:
        with connect(uri) as conn:
            for scratch in scratches:
                drop_database(conn, scratch)
    except (psycopg.Error, RunbookError) as exc:
        report.notes.append(f"could not drop {', '.join(scratches)}: {first_line(exc)}; drop them by hand")


# -- tracking ----------------------------------------------------------------------------------------


def _drill_tracking(uri: str, dump: Path, report: DrillReport) -> None:
    if not _holds(dump, make_url(uri).database, report):
        return
    with connect(uri) as source:
        missing = [t for t in TRACKING_NEEDS if t not in _tables(source)]
        if missing:
            name = make_url(uri).database
            raise RunbookError(f"{name} has no table {', '.join(missing)}: name the tracking database, not {name}")
        before = _tracking_snapshot(source)
    scratch_uri = _restore_scratch(uri, report.scratch_database, dump, report)
    if scratch_uri is None:
        return
    with connect(scratch_uri) as restored:
        if _lacks(restored, dump, "tracking", TRACKING_NEEDS, report):
            return
        after = _tracking_snapshot(restored)
        revision = _revision(restored, "alembic_version")
    _compare_tracking(before, after, report)
    if revision != image_head("tracking"):
        report.notes.append(
            f"{dump.name} is at tracking revision {revision}, this MLflow's head is {image_head('tracking')} "
            "(taken before an upgrade): champions compared in the tables, not through MLflow's store"
        )
        return
    _resolve_through_mlflow(scratch_uri, after[2], report)


def _tracking_snapshot(conn: psycopg.Connection) -> tuple[int, int, dict[tuple[str, str], str]]:
    runs = conn.execute("SELECT count(*) FROM runs WHERE lifecycle_stage = 'active'").fetchone()[0]
    query = "SELECT count(*) FROM model_versions WHERE current_stage != 'Deleted_Internal'"
    versions = conn.execute(query).fetchone()[0]
    has_workspaces = conn.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_name = 'registered_model_aliases' "
        "AND column_name = 'workspace' AND table_schema = current_schema()"
    ).fetchone()
    workspace = "workspace" if has_workspaces else "'default'"
    query = f"SELECT {workspace}, name, version::text FROM registered_model_aliases WHERE alias = %s"
    champions = {(ws, name): version for ws, name, version in conn.execute(query, (CHAMPION,)).fetchall()}
    return runs, versions, champions


def _label(key: tuple[str, str]) -> str:
    """A model's name, prefixed by its workspace outside ``default`` (names repeat across teams)."""
    workspace, name = key
    return name if workspace == "default" else f"{workspace}/{name}"


def _compare_tracking(before: tuple, after: tuple, report: DrillReport) -> None:
    (source_runs, source_versions, source_champions), (runs, versions, champions) = before, after
    report.runs, report.model_versions = (source_runs, runs), (source_versions, versions)
    if runs != source_runs:
        report.problems.append(f"runs: {runs} restored, {source_runs} in the source")
    if versions != source_versions:
        report.problems.append(f"model versions: {versions} restored, {source_versions} in the source")
    for key in sorted(set(source_champions) | set(champions)):
        source, restored = source_champions.get(key), champions.get(key)
        report.champions[_label(key)] = (source, restored)
        if source != restored:
            report.problems.append(f"{_label(key)}@{CHAMPION}: v{restored} restored, v{source} in the source")


def _resolve_through_mlflow(scratch_uri: str, champions: dict[tuple[str, str], str], report: DrillReport) -> None:
    """Resolve each champion with MLflow's own registry store, as a restored server would (in
    workspace mode, each in its own workspace, when the database holds a team's data)."""
    try:
        _resolve_each(scratch_uri, champions, report)
    except Exception as exc:  # MLflow refusing the restored database is the drill's finding
        report.problems.append(f"MLflow cannot read the restored registry: {first_line(exc)[:300]}")


def _resolve_each(scratch_uri: str, champions: dict[tuple[str, str], str], report: DrillReport) -> None:
    from mlflow.tracking._model_registry.utils import _get_sqlalchemy_store
    from mlflow.utils.workspace_context import WorkspaceContext

    teams = holds_team_data(scratch_uri)
    with workspace_mode(teams):
        store = _get_sqlalchemy_store(scratch_uri)  # MLflow's choice of store class for the mode
        try:
            for (workspace, name), version in champions.items():
                with WorkspaceContext(workspace) if teams else nullcontext():
                    resolved = store.get_model_version_by_alias(name, CHAMPION)
                if str(resolved.version) != version:
                    report.problems.append(
                        f"MLflow resolves {_label((workspace, name))}@{CHAMPION} to v{resolved.version}, "
                        f"table says v{version}"
                    )
        finally:
            store.engine.dispose()


# -- auth --------------------------------------------------------------------------------------------


def _drill_auth(uri: str, auth_database: str, dump: Path, report: DrillReport) -> None:
    if not _holds(dump, auth_database, report):
        return
    scratch_uri = _restore_scratch(uri, report.auth.scratch_database, dump, report)
    if scratch_uri is None:
        return
    with connect(uri, auth_database) as source, connect(scratch_uri) as restored:
        if _lacks(restored, dump, "auth", AUTH_NEEDS, report):
            return
        _compare_users(source, restored, report)
        for table in _grant_tables(source, restored, dump, report):
            _compare_rows(source, restored, table, report)


def _revision(conn: psycopg.Connection, version_table: str) -> str | None:
    """The schema's Alembic revision (None without the table: an auth schema before MLflow 3.6)."""
    if version_table not in _tables(conn):
        return None
    query = sql.SQL("SELECT max(version_num) FROM {}").format(sql.Identifier(version_table))
    return conn.execute(query).fetchone()[0]


def _grant_tables(source: psycopg.Connection, restored: psycopg.Connection, dump: Path, report: DrillReport):
    """Every grant table of the source's auth schema. A dump taken at another auth revision (before
    an upgrade) is compared on the tables every revision has; the rest are named in a note."""
    grants = sorted(t for t in _tables(source) if t.endswith("_permissions") or t in ROLE_TABLES)
    present = _tables(restored)
    revisions = _revision(source, "alembic_version_auth"), _revision(restored, "alembic_version_auth")
    if revisions[0] != revisions[1]:
        skipped = [t for t in grants if t not in AUTH_NEEDS]
        report.notes.append(
            f"{dump.name} is at auth revision {revisions[1]}, the source at {revisions[0]}: "
            f"grants compared in {', '.join(AUTH_NEEDS[1:])} only, not in {', '.join(skipped) or '-'}"
        )
        return [t for t in grants if t in AUTH_NEEDS]
    missing = [t for t in grants if t not in present]
    if missing:
        report.problems.append(f"{dump.name} lacks the grant tables {', '.join(missing)} the source has")
    return [t for t in grants if t in present]


def _compare_users(source: psycopg.Connection, restored: psycopg.Connection, report: DrillReport) -> None:
    query = "SELECT username, is_admin FROM users"
    before, after = set(source.execute(query).fetchall()), set(restored.execute(query).fetchall())
    report.auth.users = (len(before), len(after))
    differ = sorted({name for name, _ in before ^ after})
    if differ:
        report.problems.append(f"auth users: {', '.join(differ[:5])} differ (name or admin flag) from the source")


def _columns(conn: psycopg.Connection, table: str) -> list[str]:
    query = (
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s AND table_schema = current_schema()"
    )
    return [row[0] for row in conn.execute(query, (table,))]


def _compare_rows(source: psycopg.Connection, restored: psycopg.Connection, table: str, report: DrillReport) -> None:
    """The rows of ``table`` on the columns both sides have (an upgrade may add columns)."""
    common = sorted(set(_columns(source, table)) & set(_columns(restored, table)))
    query = sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(map(sql.Identifier, common)), sql.Identifier(table))
    before, after = Counter(source.execute(query).fetchall()), Counter(restored.execute(query).fetchall())
    report.auth.grants[table] = (before.total(), after.total())
    lost, extra = (before - after).total(), (after - before).total()
    if lost or extra:
        report.problems.append(
            f"auth {table}: {lost} source rows not restored, {extra} restored rows not in the source"
        )
