"""The coordinated schema upgrade, the same steps locally, in the deploy's migration Job and for
`mlflow-platform db upgrade` against any database:

1. decide from the revisions (``revisions.schema_plan``): nothing to do is the common case, and
   then the rollout is a plain rolling update;
2. stop every writer (``Writers``): locally the tracking server, in a cluster the server and job
   Deployments and the runbook CronJobs, elsewhere the operator (``StoppedByOperator``); and end
   any build of the platform's indexes, which a migration's ALTER TABLE would wait behind;
3. take a restorable backup (``Backup``): pg_dump files (``PgDumps``), or an RDS snapshot
   (``RdsSnapshot``);
4. migrate both schemas (``migrate``, MLflow's own migrations unless a drill passes a failing one)
   and verify: each at the image's head, and no user-visible rows lost;
5. leave restarting to the caller (the new version's rollout), never the old version on the new
   schema. A failure leaves the writers stopped, marks it, and names the restore command.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from ..errors import RunbookError, UpgradeError, first_line
from .backup import backup_to_file, snapshot_name, snapshot_rds
from .connection import connect, with_database
from .revisions import UPGRADE, SchemaPlan, schema_plan
from .schema import migrate_schemas
from .tuning import tuners_stopped

Log = Callable[[str], None]
#: ``migrate(owner_uri, auth_database)``: both schemas to the image's head.
Migration = Callable[[str, str | None], None]

#: What an upgrade must not lose: the rows a user would miss first.
TRACKING_TABLES = ("experiments", "runs", "metrics", "params", "tags", "model_versions", "registered_model_aliases")
AUTH_TABLES = ("users", "experiment_permissions", "registered_model_permissions")


class Writers(Protocol):
    def stop(self, log: Log) -> None: ...
    def resume(self, log: Log) -> None: ...
    def deployed_version(self) -> str | None: ...
    def mark_failed(self, reason: str) -> None: ...
    def failure(self) -> str | None: ...


class Backup(Protocol):
    def take(self, from_version: str, to_version: str, log: Log) -> list[str]: ...
    def restore_command(self, taken: list[str]) -> str: ...


@dataclass
class UpgradeOutcome:
    action: str
    plan: SchemaPlan
    backups: list[str] = field(default_factory=list)
    before: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)
    stopped_seconds: float = 0.0


def _image_version() -> str:
    import mlflow

    return mlflow.__version__


def counts(uri: str, auth_database: str | None = None) -> dict[str, int]:
    """Row counts of ``TRACKING_TABLES`` and, with ``auth_database``, ``AUTH_TABLES`` (``auth.``-prefixed)."""
    found: dict[str, int] = {}
    targets = [(None, "", TRACKING_TABLES), *([(auth_database, "auth.", AUTH_TABLES)] if auth_database else [])]
    for database, prefix, tables in targets:
        with connect(uri, database) as conn:
            for table in tables:
                query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
                found[f"{prefix}{table}"] = conn.execute(query).fetchone()[0]
    return found


def coordinated_upgrade(
    owner_uri: str,
    auth_database: str | None,
    writers: Writers,
    backup: Backup,
    *,
    log: Log = print,
    migrate: Migration = migrate_schemas,
    backup_when_current: bool = False,
) -> UpgradeOutcome:
    """Run steps 1-4 above; returns what happened. Raises UpgradeError (writers left stopped and the
    failure recorded) if the backup, the migration or the verification fails. With
    ``backup_when_current`` a backup is taken even when nothing is to migrate (the writers keep
    running then: pg_dump and RDS snapshots are consistent while they write)."""
    earlier = writers.failure()
    if earlier:
        raise UpgradeError(f"an earlier upgrade failed and was not cleared: {earlier}")
    plan = schema_plan(owner_uri, auth_database)
    outcome = UpgradeOutcome(plan.action, plan)
    log(f"schema    {plan.describe()} => {plan.action}")
    if plan.action != UPGRADE:
        if backup_when_current:
            outcome.backups = _take(backup, writers, log)
        return outcome
    auth = auth_database if _has_auth(plan) else None
    outcome.before = counts(owner_uri, auth)
    started = time.monotonic()
    writers.stop(log)
    with _no_tuners(owner_uri, writers, log):
        outcome.backups = _take(backup, writers, log, resume_on_failure=True)
        restore = backup.restore_command(outcome.backups)
        try:
            migrate(owner_uri, auth_database)
            outcome.after = counts(owner_uri, auth)
        except Exception as exc:
            _fail(writers, f"migration failed: {exc}", restore)
    _verify(owner_uri, auth_database, outcome, writers, restore)
    outcome.stopped_seconds = time.monotonic() - started
    log(f"migrate   both schemas at the image's head, row counts intact ({outcome.stopped_seconds:.1f} s)")
    return outcome


@contextmanager
def _no_tuners(owner_uri: str, writers: Writers, log: Log) -> Iterator[None]:
    """``tuners_stopped`` for the backup and the migration; if it cannot be had, nothing was
    changed and the old version may serve again."""
    with ExitStack() as held:
        try:
            conn = held.enter_context(connect(owner_uri))
            held.enter_context(tuners_stopped(conn, log))
        except (psycopg.Error, RunbookError) as exc:
            writers.resume(log)
            reason = first_line(exc)
            raise UpgradeError(f"index builds could not be stopped ({reason}), nothing was migrated") from None
        yield


def _take(backup: Backup, writers: Writers, log: Log, *, resume_on_failure: bool = False) -> list[str]:
    try:
        taken = backup.take(writers.deployed_version() or "unknown", _image_version(), log)
    except Exception as exc:
        if resume_on_failure:
            writers.resume(log)  # nothing was changed: the old version may serve again
        raise UpgradeError(f"backup failed, nothing was migrated: {exc}") from None
    log(f"backup    {', '.join(taken)}")
    return taken


def _has_auth(plan: SchemaPlan) -> bool:
    return any(s.kind == "auth" and s.has_tables for s in plan.states)


def _verify(owner_uri: str, auth_database: str | None, outcome: UpgradeOutcome, writers, restore: str) -> None:
    behind = [s.describe() for s in schema_plan(owner_uri, auth_database).states if s.revision != s.head]
    if behind:
        _fail(writers, f"not at the image's head after migrating: {'; '.join(behind)}", restore)
    lost = {k: (v, outcome.after.get(k, 0)) for k, v in outcome.before.items() if outcome.after.get(k, 0) < v}
    if lost:
        _fail(writers, f"rows missing after the migration (before, after): {lost}", restore)


def _fail(writers: Writers, reason: str, restore: str) -> None:
    message = f"{reason}. Writers stay stopped" + (f"; restore with: {restore}" if restore else "")
    writers.mark_failed(message)
    raise UpgradeError(message)


@dataclass
class StoppedByOperator:
    """Writers an operator stopped before running `mlflow-platform db upgrade` against a database
    (as documented): nothing to stop or resume here, and the command's error is the failure record."""

    def stop(self, log: Log) -> None:
        log("writers   stopped by the operator beforehand (this command does not stop or start them)")

    def resume(self, log: Log) -> None:
        log("writers   may start again: nothing was changed")

    def deployed_version(self) -> str | None:
        return None

    def mark_failed(self, reason: str) -> None:
        pass

    def failure(self) -> str | None:
        return None


@dataclass
class RdsSnapshot:
    """In AWS: a manual snapshot of the instance (both databases), waited for until available."""

    instance: str

    def take(self, from_version: str, to_version: str, log: Log) -> list[str]:
        name = snapshot_name(self.instance, from_version, to_version)
        log(f"snapshot  {name} (waiting until available)")
        return [snapshot_rds(self.instance, name=name)]

    def restore_command(self, taken: list[str]) -> str:
        return f"mlflow-platform db restore --snapshot {taken[0]} --rds-instance {self.instance}"


@dataclass
class PgDumps:
    """One pg_dump file per database, into ``backup_dir``."""

    uris: list[str]
    backup_dir: Path
    restore_prefix: str = "mlflow-platform db restore --local"

    @classmethod
    def of(cls, owner_uri: str, auth_database: str | None, backup_dir: Path, restore_prefix: str) -> PgDumps:
        """The tracking database of ``owner_uri`` and, when named, the auth database beside it."""
        uris = [owner_uri, *([with_database(owner_uri, auth_database)] if auth_database else [])]
        return cls(uris, backup_dir, restore_prefix)

    def take(self, from_version: str, to_version: str, log: Log) -> list[str]:
        return [str(backup_to_file(uri, self.backup_dir)) for uri in self.uris]

    def restore_command(self, taken: list[str]) -> str:
        return "; ".join(f"{self.restore_prefix} --backup {path}" for path in taken)


def operator_restore_prefix(owner_uri: str) -> str:
    """How an operator restores a pg_dump of ``owner_uri``'s server (the password from PGPASSWORD,
    never in the printed command)."""
    url = make_url(owner_uri).set(password=None).render_as_string(hide_password=False)
    return f"mlflow-platform db restore --backend-store-uri {url}"
