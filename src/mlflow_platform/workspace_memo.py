"""With workspaces on (any stack with teams), MLflow resolves the request's workspace from the
database on every request, before any check (``resolve_workspace_from_header`` ->
``get_workspace``, or ``get_default_workspace`` without the header): 14% of a worker's samples on
a registry read. This keeps those two answers per worker for ``server.permissionCacheTtlSeconds``,
for requests that only read.

Why only reads (found by an independent review, reproduced on the platform): the lookup is
MLflow's only check that the workspace still exists, and nothing in the schema ties a row to a
workspace (no foreign key). Served from a memo, a write in the seconds after a workspace was
deleted passed the team's cached grants and stored a model under a workspace that no longer
existed; it came back when the name was created again. So a Flask request with any method but
GET or HEAD, and anything outside a Flask request (MLflow's FastAPI half), asks the database.

Bounded staleness for the reads (the permission cache's ``Cache``):
- only a workspace that exists is kept; one that does not is asked again every time, so a new
  team's workspace is served at once on every worker;
- any write through this worker's workspace store empties its memo at once (as does MLflow's
  artifact-root resolution, which the store does on every experiment create);
- on other workers a read in a deleted workspace is still answered for at most the TTL: it finds
  nothing (deletion requires the workspace empty, or empties it), and an admin's
  ``GET /workspaces/<name>`` may show the workspace as it was.

``PINNED``: the MLflow functions whose answers are kept, by source fingerprint; a release that
changes one fails ``tests/test_workspace_memo.py`` until someone reads it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from .permission_cache import Cache, wrap

#: The only reads kept: what every request's resolution asks.
KEPT = ("get_workspace", "get_default_workspace")
PINNED = {
    "mlflow/server/workspace_helpers.py": {
        "resolve_workspace_from_header": "8494843f3ce9edcf",
        "_get_workspace_store": "4002947e0bfc0885",
    },
    "mlflow/store/workspace/sqlalchemy_store.py": {
        "SqlAlchemyStore.get_workspace": "cbf302a7fe73938e",
        "SqlAlchemyStore.get_default_workspace": "1c61d5eebf99444f",
        "SqlAlchemyStore._get_workspace": "ede0b6dc9741ef33",
    },
}


def install(store: Any, ttl: float, clock: Callable[[], float] = time.monotonic) -> Cache | None:
    """Keep ``KEPT`` on the workspace store instance MLflow's server resolves with; every write
    method of the store empties it."""
    if ttl <= 0:
        return None
    cache = Cache(ttl, clock=clock)
    wrap(store, cache, KEPT.__contains__, _read_only)
    return cache


def _read_only(kept: Callable, fresh: Callable) -> Callable:
    @functools.wraps(fresh)
    def resolve(*args, **kwargs):
        return (kept if _reading() else fresh)(*args, **kwargs)

    return resolve


def _reading() -> bool:
    """A Flask request that only reads: GET or HEAD (MLflow's REST API writes with POST, PATCH,
    PUT and DELETE)."""
    from flask import has_request_context, request

    return has_request_context() and request.method in ("GET", "HEAD")


def install_on_server(ttl: float) -> Cache | None:
    """On the server's own workspace store, when workspaces are on (MLflow builds it once per
    process and keeps it: ``_get_workspace_store``)."""
    from mlflow.environment_variables import MLFLOW_ENABLE_WORKSPACES

    if not MLFLOW_ENABLE_WORKSPACES.get():
        return None
    from mlflow.server.workspace_helpers import _get_workspace_store

    return install(_get_workspace_store(), ttl)
