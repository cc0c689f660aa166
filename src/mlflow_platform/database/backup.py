"""Restorable backups and restores: a pg_dump file per database (locally, and for the drill), an RDS
snapshot of the whole instance (in AWS), and putting either back.

``backup_to_file`` names a dump ``<database>-<UTC stamp>.dump``, so a directory of dumps says
which database each holds and which is newest; the restore and the drill rely on that name, and
check it against the database name pg_dump wrote into the file.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from ..errors import RunbookError, first_line
from .connection import connect, tool, tool_args

Log = Callable[[str], None]
#: The header line ``pg_restore --list`` prints for the database a dump was taken from.
_DUMPED_DATABASE = re.compile(r"^;\s+dbname: (.+)$", re.MULTILINE)


#: Extensions only a superuser creates (RDS: the master user), which the owner that restores could
#: not create again; ``db prepare`` creates them where it is allowed to.
SUPERUSER_EXTENSIONS = ("pg_stat_statements",)
_NOT_DUMPED = [f"--exclude-extension={name}" for name in SUPERUSER_EXTENSIONS]
_EXTENSION_ENTRY = re.compile(r"^\d+; \d+ \d+ (?:COMMENT - )?EXTENSION (?:- )?(\S+)")


def backup_to_file(uri: str, backup_dir: Path) -> Path:
    """pg_dump (custom format, no owner) of the database behind ``uri`` into ``backup_dir``."""
    backup_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = backup_dir / f"{make_url(uri).database}-{stamp}.dump"
    args, env = tool_args(uri)
    command = [tool("pg_dump"), "--format=custom", "--no-owner", *_NOT_DUMPED, "--file", str(target), *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0 or not target.exists() or target.stat().st_size == 0:
        target.unlink(missing_ok=True)
        raise RunbookError(f"backup failed (pg_dump exit {result.returncode}): {result.stderr.strip()}")
    return target


def dump_database_name(dump: Path) -> str:
    """The database a dump holds, by its name: ``backup_to_file`` writes ``<database>-<UTC stamp>.dump``."""
    return dump.name.rsplit("-", 1)[0]


def newest_dump(backup_dir: Path, database: str) -> Path | None:
    """The newest ``<database>-*.dump`` in ``backup_dir`` (not another database's whose name
    merely starts the same), or None."""
    dumps = [p for p in backup_dir.glob(f"{database}-*.dump") if dump_database_name(p) == database]
    return max(dumps, key=lambda p: (p.stat().st_mtime, p.name), default=None)


def dumped_database(dump: Path) -> str:
    """The database pg_dump wrote into the file's header; RunbookError if it is no readable dump."""
    result = subprocess.run([tool("pg_restore"), "--list", str(dump)], capture_output=True, text=True)
    found = _DUMPED_DATABASE.search(result.stdout) if result.returncode == 0 else None
    if not found:
        reason = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "no database named in it"
        raise RunbookError(f"{dump} is not a readable pg_dump file ({reason})")
    return found.group(1).strip()


def _restorable_entries(dump: Path, directory: Path) -> Path:
    """pg_restore's table of contents for ``dump`` without the superuser-only extensions (a dump
    taken before they were excluded, or by hand, still holds them), as a ``--use-list`` file."""
    listing = subprocess.run([tool("pg_restore"), "--list", str(dump)], capture_output=True, text=True)
    if listing.returncode != 0:
        raise RunbookError(f"{dump} is not a readable pg_dump file ({listing.stderr.strip()[-300:]})")
    kept = [
        line
        for line in listing.stdout.splitlines()
        if not ((m := _EXTENSION_ENTRY.match(line)) and m.group(1) in SUPERUSER_EXTENSIONS)
    ]
    entries = directory / "entries.list"
    entries.write_text("\n".join(kept) + "\n")
    return entries


def pg_restore(uri: str, database: str, dump: Path) -> subprocess.CompletedProcess:
    """Restore ``dump`` into the (empty) ``database`` on the server behind ``uri``."""
    args, env = tool_args(uri, database)
    with tempfile.TemporaryDirectory() as scratch:
        entries = _restorable_entries(dump, Path(scratch))
        command = [tool("pg_restore"), "--no-owner", "--exit-on-error", "--use-list", str(entries), *args, str(dump)]
        return subprocess.run(command, env=env, capture_output=True, text=True)


def drop_database(admin: psycopg.Connection, name: str) -> None:
    """DROP DATABASE, ending its sessions. FORCE may only end sessions of roles the caller is a
    member of, and refuses an autovacuum worker (found at 100k runs, after gc); plain DROP stops
    autovacuum workers itself, and refuses only when other sessions are connected."""
    try:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    except psycopg.errors.InsufficientPrivilege:
        try:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        except psycopg.errors.ObjectInUse as exc:
            raise RunbookError(
                f"database {name} was not dropped: sessions of another role are connected to it "
                f"({first_line(exc)}); stop them, or run this as the RDS master user"
            ) from None


def restore_database(uri: str, dump: Path, database: str | None = None) -> str:
    """Replace a database with a pg_dump backup (its server's writers must be stopped); returns the
    database restored. The dump's own name says which database it holds, unless ``database`` is given.

    The dump is restored beside the live database first (``<database>_restoring``) and swapped in
    only once pg_restore has succeeded (``_swap_in``): a dump that fails halfway (a full disk, a
    truncated file) leaves the live database as it was."""
    if not dump.is_file():
        raise RunbookError(f"no backup at {dump}")
    target = database or dump_database_name(dump)
    dumped_database(dump)  # an unreadable file is refused before anything is created
    refuse_connected_writers(uri, [target])
    side = side_name(target, "restoring")
    with connect(uri, "postgres") as admin:
        drop_database(admin, side)  # an earlier attempt's leftovers
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(side)))
    result = pg_restore(uri, side, dump)
    with connect(uri, "postgres") as admin:
        if result.returncode != 0:
            drop_database(admin, side)
            raise RunbookError(f"pg_restore of {dump} failed, {target} is unchanged: {result.stderr.strip()[:300]}")
        _swap_in(admin, side, target)
    _create_statement_statistics(uri, target)
    return target


def _swap_in(admin: psycopg.Connection, side: str, target: str) -> None:
    """Put the restored ``side`` in ``target``'s place by renames, so that at every step one of the
    two holds the data under a name the error states: the live database is moved aside first, and
    moved back if the restored copy cannot take its name. A rename needs the database free of
    sessions (it has no FORCE): this role's own are ended, another role's are named."""
    old = side_name(target, "replaced")
    if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (old,)).fetchone():
        raise RunbookError(
            f"database {old} exists (an earlier restore's live data, moved aside): {target} is unchanged and "
            f"the restored copy is in {side}; look at {old}, then rename or drop it and restore again"
        )
    exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target,)).fetchone()
    if exists:
        _rename(admin, target, old, f"{target} is unchanged; the restored copy is in {side}")
    try:
        _rename(admin, side, target, f"{target} was moved back; the restored copy is in {side}")
    except RunbookError:
        if exists:
            _rename(admin, old, target, f"the live data is in {old} and the restored copy in {side}")
        raise
    if exists:
        drop_database(admin, old)


def _rename(admin: psycopg.Connection, name: str, to: str, state: str) -> None:
    admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND usename = current_user "
        "AND pid <> pg_backend_pid()",
        (name,),
    )
    try:
        admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(name), sql.Identifier(to)))
    except psycopg.Error as exc:
        raise RunbookError(f"database {name} could not be renamed to {to} ({first_line(exc)}): {state}") from None


def refuse_connected_writers(uri: str, databases: list[str]) -> None:
    """A restore replaces the databases: sessions of other roles on them (the tracking server's
    role, a runbook's) are writers still running, whose writes would be lost or land in the wrong
    copy. Refused before anything is done. This role's own sessions are ended by the swap: run
    the server and runbooks as other roles (the platform's server uses its DML-only role)."""
    with connect(uri, "postgres") as admin:
        rows = admin.execute(
            "SELECT datname, usename, coalesce(nullif(application_name, ''), '?'), count(*) FROM pg_stat_activity "
            "WHERE datname = ANY(%s) AND usename <> current_user AND backend_type = 'client backend' "
            "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            (databases,),
        ).fetchall()
    if rows:
        held = ", ".join(f"{n} session(s) of {user} ({app}) on {db}" for db, user, app, n in rows)
        raise RunbookError(f"writers are still connected: {held}; stop them first (nothing was changed)")


def side_name(database: str, role: str) -> str:
    """``<database>_<role>``: where a restore builds its copy (``restoring``) or moves the live
    database aside (``replaced``); PostgreSQL names are at most 63 bytes."""
    suffix = f"_{role}"
    return database.encode()[: 63 - len(suffix)].decode(errors="ignore") + suffix


def _create_statement_statistics(uri: str, database: str) -> None:
    """The dump leaves out the superuser-only extensions; put them back where this role may
    (`db report` reads pg_stat_statements). Elsewhere the next deploy's migration step does."""
    with suppress(psycopg.Error), connect(uri, database) as conn:
        for name in SUPERUSER_EXTENSIONS:
            with suppress(psycopg.Error):
                conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(name)))


def snapshot_name(instance: str, from_version: str, to_version: str, now: datetime | None = None) -> str:
    """An RDS snapshot identifier naming the versions: letters, digits and single hyphens, starting
    with a letter, at most 255 characters (the CreateDBSnapshot API's constraints)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    raw = f"{instance}-upgrade-{from_version}-to-{to_version}-{stamp}"
    name = re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9-]", "-", raw)).strip("-")
    return name[:255].rstrip("-")


def _rds():
    import boto3

    return boto3.client("rds", endpoint_url=os.environ.get("MLFLOW_PLATFORM_RDS_ENDPOINT_URL"))


def snapshot_rds(instance: str, *, name: str | None = None, wait: bool = True) -> str:
    """A manual snapshot, named ``<instance>-upgrade-…`` (the prefix the migration role may create)."""
    import mlflow

    rds = _rds()
    snapshot = name or snapshot_name(instance, "manual", mlflow.__version__)
    try:
        rds.create_db_snapshot(
            DBInstanceIdentifier=instance,
            DBSnapshotIdentifier=snapshot,
            Tags=[{"Key": "CreatedBy", "Value": "mlflow-platform db upgrade"}],
        )
        if wait:
            rds.get_waiter("db_snapshot_available").wait(
                DBSnapshotIdentifier=snapshot, WaiterConfig={"Delay": 15, "MaxAttempts": 240}
            )
    except Exception as exc:
        raise RunbookError(f"RDS snapshot of {instance} failed: {exc}") from None
    return snapshot


def _restore_side_instance(rds, snapshot: str, instance: str, log: Log) -> str:
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
        Tags=[{"Key": "CreatedBy", "Value": "mlflow-platform db restore"}],
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
    log: Log = print,
) -> list[str]:
    """Put ``databases`` on ``instance`` back to their state in ``snapshot`` without replacing the
    instance Pulumi manages: restore the snapshot to a temporary instance, pg_dump each database
    from it and pg_restore it over the live one, then delete the temporary instance. ``endpoint``
    reaches the temporary instance through a tunnel instead of its RDS address. The writers must
    be stopped (a failed upgrade leaves them stopped)."""
    refuse_connected_writers(owner_uri, databases)  # before a temporary instance is paid for
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
