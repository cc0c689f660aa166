"""The coordinated schema upgrade on the local platform: the same steps as the deploy's migration
Job (``database.upgrade``), with the tracking server as the only writer and pg_dump files as
the backup. The server starts again only once both schemas are verified."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..database.schema import migrate_schemas
from ..database.upgrade import Migration, PgDumps, UpgradeOutcome, coordinated_upgrade
from .platform import LocalPlatform


@dataclass
class LocalWriters:
    platform: LocalPlatform

    def stop(self, log) -> None:
        self.platform.stop_tracking(log=log)

    def resume(self, log) -> None:
        self.platform.up(log=log)

    def deployed_version(self) -> str | None:
        return None  # one installation: the old version is gone once the package is upgraded

    def mark_failed(self, reason: str) -> None:
        pass  # the server stays stopped and the command's error says what to do

    def failure(self) -> str | None:
        return None


def upgrade_local(
    platform: LocalPlatform,
    *,
    backup_dir: Path | None = None,
    auth_database: str | None = None,
    log=print,
    migrate: Migration = migrate_schemas,
    backup_when_current: bool = False,
) -> UpgradeOutcome:
    """Stop the server, back up both databases (to ``backup_dir``, else the platform's), migrate
    and verify both schemas, start the server (its own migration step then re-grants the role). On
    failure the server stays stopped and the error names the restore commands; a failed backup
    restarts it (nothing was changed). With nothing to migrate the server keeps running."""
    uri = platform.database_uri()
    auth = auth_database or platform.config.database.auth_database
    prefix = f"MLFLOW_PLATFORM_STATE_DIR={platform.state_dir} mlflow-platform db restore --local"
    backup = PgDumps.of(uri, auth, backup_dir or platform.backup_dir, prefix)
    writers = LocalWriters(platform)
    outcome = coordinated_upgrade(
        uri, auth, writers, backup, log=log, migrate=migrate, backup_when_current=backup_when_current
    )
    platform.up(log=log)
    return outcome
