"""Where a database's schemas stand against the MLflow this image carries.

The tracking schema keeps its Alembic revision in ``alembic_version``, basic-auth's in
``alembic_version_auth`` (MLflow >= 3.6; an older auth database has the tables and no version
table, which MLflow stamps before migrating). The heads come from the migration scripts shipped in
the installed ``mlflow`` package, so the decision follows the image, not a table we maintain.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from psycopg import sql

from ..errors import UpgradeError
from .connection import connect

#: What the pre-rollout step does with a database in this state.
FRESH, CURRENT, UPGRADE = "fresh", "current", "upgrade"


@cache
def _scripts(kind: str):
    import mlflow.server.auth.db.utils as auth_utils
    import mlflow.store.db_migrations as tracking_migrations
    from alembic.script import ScriptDirectory

    location = Path(tracking_migrations.__file__).parent if kind == "tracking" else auth_utils._get_alembic_dir()
    return ScriptDirectory(str(location))


def image_head(kind: str) -> str:
    """The newest revision this image's MLflow can migrate ``kind`` ("tracking" or "auth") to."""
    heads = _scripts(kind).get_heads()
    if len(heads) != 1:
        raise UpgradeError(f"MLflow's {kind} migrations have {len(heads)} heads ({heads}); expected one")
    return heads[0]


def known(kind: str, revision: str) -> bool:
    return _scripts(kind).get_revision(revision) is not None if revision else False


@dataclass(frozen=True)
class SchemaState:
    kind: str  # "tracking" or "auth"
    database: str
    revision: str | None  # None: not versioned (empty, or a pre-3.6 auth database)
    head: str
    has_tables: bool

    @property
    def action(self) -> str:
        if self.revision is None:
            return UPGRADE if self.has_tables else FRESH
        if self.revision == self.head:
            return CURRENT
        if not known(self.kind, self.revision):
            raise UpgradeError(
                f"the {self.kind} database {self.database} is at revision {self.revision}, which this image's "
                "MLflow does not know: it was migrated by a newer MLflow. Deploy that version again, or restore "
                "the backup taken before that upgrade (mlflow-platform db restore)"
            )
        return UPGRADE

    def describe(self) -> str:
        return f"{self.kind} {self.database}: {self.revision or 'unversioned'} -> {self.head}"


@dataclass(frozen=True)
class SchemaPlan:
    states: tuple[SchemaState, ...]

    @property
    def action(self) -> str:
        actions = {s.action for s in self.states}
        if UPGRADE in actions:
            return UPGRADE
        return FRESH if actions == {FRESH} else CURRENT

    def describe(self) -> str:
        return "; ".join(s.describe() for s in self.states)


_VERSION_TABLES = {"tracking": ("alembic_version", "experiments"), "auth": ("alembic_version_auth", "users")}


def schema_state(uri: str, kind: str, database: str | None = None) -> SchemaState:
    version_table, marker_table = _VERSION_TABLES[kind]
    with connect(uri, database) as conn:
        name = conn.info.dbname
        query = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        tables = {row[0] for row in conn.execute(query)} & {version_table, marker_table}
        revision = None
        if version_table in tables:
            row = conn.execute(sql.SQL("SELECT version_num FROM {}").format(sql.Identifier(version_table))).fetchone()
            revision = row[0] if row else None
    return SchemaState(kind, name, revision, image_head(kind), marker_table in tables)


def schema_plan(uri: str, auth_database: str | None) -> SchemaPlan:
    """Both schemas behind ``uri`` (the tracking database) and ``auth_database`` on the same server."""
    states = [schema_state(uri, "tracking")]
    if auth_database:
        states.append(schema_state(uri, "auth", auth_database))
    return SchemaPlan(tuple(states))
