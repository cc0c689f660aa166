"""The coordinated schema upgrade on the local platform: the same steps as the deploy's migration
Job (``upgrades.coordinated``), with the tracking server as the only writer and pg_dump files as
the backup. The server starts again only once both schemas are verified."""

from __future__ import annotations

from dataclasses import dataclass

from ..upgrades.coordinated import PgDumps, UpgradeOutcome, coordinated_upgrade
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


def upgrade_local(platform: LocalPlatform, *, log=print) -> UpgradeOutcome:
    """Stop the server, back up both databases, migrate and verify both schemas, start the server
    (its own migration step then re-grants the role). On failure the server stays stopped and the
    error names the restore commands; a failed backup restarts it (nothing was changed)."""
    d = platform.config.database
    uri = platform.database_uri()
    backup = PgDumps(
        [uri, platform.database_uri(d.auth_database)],
        platform.backup_dir,
        restore_prefix=f"MLFLOW_PLATFORM_STATE_DIR={platform.state_dir} mlflow-platform db-restore --local",
    )
    outcome = coordinated_upgrade(uri, d.auth_database, LocalWriters(platform), backup, log=log)
    platform.up(log=log)
    return outcome
