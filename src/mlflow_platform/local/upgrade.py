"""The coordinated schema upgrade on the local platform, as MLflow 3 requires for SQL backends: no
writer while the schema changes (MLflow does not support mixed-version rolling upgrades), a
restorable backup first, a check afterwards, and only then the server again."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..runbooks import RunbookError
from .platform import LocalPlatform


@dataclass
class UpgradeOutcome:
    backups: list[str] = field(default_factory=list)
    before: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)

    def restore_commands(self, state_dir) -> list[str]:
        return [
            f"MLFLOW_PLATFORM_STATE_DIR={state_dir} mlflow-platform db-restore --local --backup {b}"
            for b in self.backups
        ]


def coordinated_upgrade(platform: LocalPlatform, *, log=print) -> UpgradeOutcome:
    """Stop the tracking server, back up both databases, migrate both schemas, check that nothing a
    user would miss went missing, then start the server (its migration step re-grants the role).

    If a backup fails nothing has changed and the server starts again; if the migration or the
    check fails the server stays stopped and the error names the restore commands."""
    from ..runbooks import database as runbook

    d = platform.config.database
    uri = platform.database_uri()
    auth_uri = platform.database_uri(d.auth_database)
    outcome = UpgradeOutcome(before=runbook.counts(uri, d.auth_database))
    platform.stop_tracking(log=log)
    try:
        outcome.backups = [str(runbook.backup_to_file(u, platform.backup_dir)) for u in (uri, auth_uri)]
    except Exception:
        platform.up(log=log)  # nothing was changed
        raise
    log(f"backup    {', '.join(outcome.backups)}")
    try:
        runbook.upgrade_schema(uri)
        runbook.upgrade_auth_schema(auth_uri)
        outcome.after = runbook.counts(uri, d.auth_database)
    except Exception as exc:
        raise RunbookError(_failed(f"migration failed: {exc}", outcome, platform)) from None
    lost = {k: (v, outcome.after.get(k, 0)) for k, v in outcome.before.items() if outcome.after.get(k, 0) < v}
    if lost:
        raise RunbookError(_failed(f"rows missing after the migration: {lost}", outcome, platform))
    log("migrate   both schemas at MLflow's head; row counts intact")
    platform.up(log=log)
    return outcome


def _failed(reason: str, outcome: UpgradeOutcome, platform: LocalPlatform) -> str:
    commands = "; ".join(outcome.restore_commands(platform.state_dir)) or "no backup was taken"
    return f"{reason}. The server stays stopped; restore with: {commands}; then `mlflow-platform local up`"
