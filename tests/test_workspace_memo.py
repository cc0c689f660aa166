"""The per-worker memo of the request's workspace (workspace_memo.py) on MLflow's own workspace
store (SQLite): for reading requests, no query while fresh, a missing workspace never kept, this
worker's writes seen at once, another worker's within the TTL; a writing request, or one outside
Flask, always asks the database (a write into a just-deleted workspace is refused at once); the
server installs it when workspaces are on; and the pin on the MLflow functions it keeps."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask
from mlflow.entities.workspace import Workspace
from mlflow.exceptions import MlflowException
from sqlalchemy import event

from mlflow_platform import workspace_memo

from .test_auth_lookups import _functions, _source

APP = Flask(__name__)


def reading():
    return APP.test_request_context("/api/2.0/mlflow/registered-models/alias", method="GET")


def writing():
    return APP.test_request_context("/api/2.0/mlflow/registered-models/create", method="POST")


@pytest.mark.parametrize("path", sorted(workspace_memo.PINNED))
def test_every_function_whose_answer_is_kept_is_the_one_read(path: str) -> None:
    pinned = workspace_memo.PINNED[path]
    functions = _functions(_source(path), pinned)
    changed = [n for n, f in pinned.items() if hashlib.sha256(functions.get(n, "").encode()).hexdigest()[:16] != f]
    assert not changed, f"MLflow changed {changed} in {path}: read them against workspace_memo.py, then update PINNED"


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Two workers' stores on one database; the first with the memo (10 s), counting its statements."""
    from mlflow.store.workspace.sqlalchemy_store import SqlAlchemyStore

    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mine, other = SqlAlchemyStore(uri), SqlAlchemyStore(uri)
    clock, statements = Clock(), []
    event.listen(mine._engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    assert workspace_memo.install(mine, 10, clock=clock) is not None
    other.create_workspace(Workspace(name="team-a", default_artifact_root="s3://b/a"))
    yield mine, other, clock, statements
    mine._engine.dispose()
    other._engine.dispose()


def test_a_fresh_answer_costs_no_query_and_a_copy_is_returned(stores) -> None:
    mine, _, _, statements = stores
    with reading():
        first = mine.get_workspace("team-a")
        statements.clear()
        again = mine.get_workspace("team-a")
        assert statements == [] and again.name == "team-a" and again is not first
        assert mine.get_default_workspace().name == "default"


def test_a_workspace_that_does_not_exist_is_never_kept(stores) -> None:
    mine, other, _, _ = stores
    with reading():
        with pytest.raises(MlflowException, match="not found"):
            mine.get_workspace("team-b")
        other.create_workspace(Workspace(name="team-b"))  # a new team, created through another worker
        assert mine.get_workspace("team-b").name == "team-b"


def test_this_workers_write_is_seen_at_once_and_anothers_within_the_ttl(stores) -> None:
    mine, other, clock, _ = stores
    with reading():
        assert mine.get_workspace("team-a").default_artifact_root == "s3://b/a"
    mine.update_workspace(Workspace(name="team-a", default_artifact_root="s3://b/a2"))
    with reading():
        assert mine.get_workspace("team-a").default_artifact_root == "s3://b/a2"
    other.delete_workspace("team-a")  # through another worker
    clock.now = 9.9
    with reading():
        assert mine.get_workspace("team-a").name == "team-a"  # the documented window, for reads
    clock.now = 10.1
    with reading(), pytest.raises(MlflowException, match="not found"):
        mine.get_workspace("team-a")


def test_a_write_into_a_workspace_deleted_on_another_worker_is_refused_at_once(stores) -> None:
    """Found by review on the running platform: with the lookup served from the memo, a team member
    created a model in the seconds after an admin deleted the team's workspace (the grants were
    cached too, and no foreign key ties a model to its workspace); it reappeared when the name was
    created again. A writing request, and anything outside a Flask request, asks the database."""
    mine, other, _, statements = stores
    with reading():
        mine.get_workspace("team-a")  # kept
    other.delete_workspace("team-a")
    with writing(), pytest.raises(MlflowException, match="not found"):
        mine.get_workspace("team-a")
    with pytest.raises(MlflowException, match="not found"):  # MLflow's FastAPI half: no Flask request
        mine.get_workspace("team-a")
    with reading():
        statements.clear()
        mine.get_workspace("team-a")  # a read still within the window: it finds the workspace empty
        assert statements == []


def test_a_ttl_of_zero_keeps_nothing() -> None:
    assert workspace_memo.install(object(), 0) is None


_SERVER = """
import warnings
warnings.simplefilter("ignore")
from mlflow_platform.server_app import create_app
create_app()
from mlflow.server import workspace_helpers
store = workspace_helpers._workspace_store  # built by the memo, or never
print(store is not None and hasattr(store.get_workspace, "__wrapped__"))
"""


@pytest.mark.slow  # a fresh interpreter builds the whole server: 7 s each
@pytest.mark.parametrize("workspaces", ["true", "false"])
def test_the_server_keeps_the_workspace_only_with_workspaces_on(tmp_path: Path, workspaces: str) -> None:
    ini = tmp_path / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{tmp_path / 'auth.db'}\nadmin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "x" * 32,
        "MLFLOW_AUTH_ADMIN_PASSWORD": "y" * 16,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_WORKSPACES": workspaces,
        "_MLFLOW_SERVER_FILE_STORE": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "MLFLOW_PLATFORM_PERMISSION_CACHE_TTL": "10",
    }
    built = subprocess.run([sys.executable, "-c", _SERVER], env=env, cwd=tmp_path, capture_output=True, text=True)
    if workspaces == "true":
        assert built.returncode == 0 and built.stdout.strip().splitlines()[-1] == "True", built.stderr[-2000:]
    else:  # MLflow refuses the workspace store without workspaces; the memo never asked for it
        assert "workspaces are not enabled" in built.stderr or built.stdout.strip().endswith("False"), built.stderr[
            -800:
        ]
