"""MLflow's SQL stores opened straight on the database, by a runbook, in a stack with teams.

MLflow refuses to open a tracking or registry store in single-tenant mode on a database where any
experiment or registered model lives in a workspace other than ``default`` ("Cannot disable
workspaces because experiments exist outside the default workspace"). So a runbook that opens the
stores itself (``mlflow gc``, the restore drill) turns workspace mode on when the database holds a
team's data, and names the workspace it works in."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from .connection import connect

DEFAULT = "default"
_TABLES = ("experiments", "registered_models")


def holds_team_data(database_uri: str) -> bool:
    """Whether any experiment or registered model is in a workspace other than ``default``
    (False for a schema from before workspaces, which has no ``workspace`` column)."""
    with connect(database_uri) as conn:
        present = {
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.columns WHERE column_name = 'workspace' "
                "AND table_name = ANY(%s) AND table_schema = current_schema()",
                (list(_TABLES),),
            )
        }
        return any(
            conn.execute(f"SELECT 1 FROM {table} WHERE workspace <> %s LIMIT 1", (DEFAULT,)).fetchone()
            for table in _TABLES
            if table in present
        )


@contextmanager
def workspace_mode(enabled: bool) -> Iterator[None]:
    """``MLFLOW_ENABLE_WORKSPACES`` for the block: MLflow picks its workspace-aware store class by it
    when a store is made, and its stores read it on every call."""
    previous = os.environ.get("MLFLOW_ENABLE_WORKSPACES")
    if enabled:
        os.environ["MLFLOW_ENABLE_WORKSPACES"] = "true"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_ENABLE_WORKSPACES", None)
        else:
            os.environ["MLFLOW_ENABLE_WORKSPACES"] = previous
