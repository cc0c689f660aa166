"""The coordinated schema upgrade, the same steps locally and in the deploy's migration Job:

1. decide from the revisions (``revisions.schema_plan``): nothing to do is the common case, and
   then the rollout is a plain rolling update;
2. stop every writer (``Writers``): locally the tracking server, in a cluster the server and job
   Deployments and the runbook CronJobs;
3. take a restorable backup (``Backup``): pg_dump files locally, an RDS snapshot in AWS;
4. migrate both schemas and verify: each at the image's head, and no user-visible rows lost;
5. leave restarting to the caller (the new version's rollout), never the old version on the new
   schema. A failure leaves the writers stopped, marks it, and names the restore command.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from sqlalchemy.engine import make_url

from . import UpgradeError
from .revisions import UPGRADE, SchemaPlan, schema_plan

Log = Callable[[str], None]


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


def coordinated_upgrade(
    owner_uri: str, auth_database: str | None, writers: Writers, backup: Backup, *, log: Log = print
) -> UpgradeOutcome:
    """Run steps 1-4 above; returns what happened. Raises UpgradeError (writers left stopped and the
    failure recorded) if the backup, the migration or the verification fails."""
    from ..runbooks.database import counts

    earlier = writers.failure()
    if earlier:
        raise UpgradeError(f"an earlier upgrade failed and was not cleared: {earlier}")
    plan = schema_plan(owner_uri, auth_database)
    outcome = UpgradeOutcome(plan.action, plan)
    log(f"schema    {plan.describe()} => {plan.action}")
    if plan.action != UPGRADE:
        return outcome
    outcome.before = counts(owner_uri, auth_database if _has_auth(plan) else None)
    started = time.monotonic()
    writers.stop(log)
    try:
        outcome.backups = backup.take(writers.deployed_version() or "unknown", _image_version(), log)
    except Exception as exc:
        writers.resume(log)  # nothing was changed: the old version may serve again
        raise UpgradeError(f"backup failed, nothing was migrated: {exc}") from None
    log(f"backup    {', '.join(outcome.backups)}")
    restore = backup.restore_command(outcome.backups)
    try:
        _migrate(owner_uri, auth_database)
        outcome.after = counts(owner_uri, auth_database if _has_auth(plan) else None)
    except Exception as exc:
        _fail(writers, f"migration failed: {exc}", restore)
    _verify(owner_uri, auth_database, outcome, writers, restore)
    outcome.stopped_seconds = time.monotonic() - started
    log(f"migrate   both schemas at the image's head, row counts intact ({outcome.stopped_seconds:.1f} s)")
    return outcome


def _has_auth(plan: SchemaPlan) -> bool:
    return any(s.kind == "auth" and s.has_tables for s in plan.states)


def _migrate(owner_uri: str, auth_database: str | None) -> None:
    from ..runbooks import database as runbook  # looked up at call time: the failure drill replaces it

    runbook.upgrade_schema(owner_uri)
    if auth_database:
        runbook.upgrade_auth_schema(make_url(owner_uri).set(database=auth_database).render_as_string(False))


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


def snapshot_name(instance: str, from_version: str, to_version: str, now: datetime | None = None) -> str:
    """An RDS snapshot identifier naming the versions: letters, digits and single hyphens, starting
    with a letter, at most 255 characters (the CreateDBSnapshot API's constraints)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    raw = f"{instance}-upgrade-{from_version}-to-{to_version}-{stamp}"
    name = re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9-]", "-", raw)).strip("-")
    return name[:255].rstrip("-")


@dataclass
class RdsSnapshot:
    """In AWS: a manual snapshot of the instance (both databases), waited for until available."""

    instance: str

    def take(self, from_version: str, to_version: str, log: Log) -> list[str]:
        from ..runbooks.database import snapshot_rds

        name = snapshot_name(self.instance, from_version, to_version)
        log(f"snapshot  {name} (waiting until available)")
        return [snapshot_rds(self.instance, name=name)]

    def restore_command(self, taken: list[str]) -> str:
        return f"mlflow-platform db-restore --snapshot {taken[0]} --rds-instance {self.instance}"


@dataclass
class PgDumps:
    """Locally: one pg_dump file per database."""

    uris: list[str]
    backup_dir: Path
    restore_prefix: str = "mlflow-platform db-restore --local"

    def take(self, from_version: str, to_version: str, log: Log) -> list[str]:
        from ..runbooks.database import backup_to_file

        return [str(backup_to_file(uri, self.backup_dir)) for uri in self.uris]

    def restore_command(self, taken: list[str]) -> str:
        return "; ".join(f"{self.restore_prefix} --backup {path}" for path in taken)
