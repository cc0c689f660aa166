"""The workspace memo (workspace_memo.py) against the attack an independent review ran on the
platform: warm every worker's memo and grant cache as a member of a team, have an admin delete
the team's workspace, and write into it at once. With the lookup served from the memo a model was
stored under the deleted name (no foreign key ties it to a workspace) and came back when the name
was created again; writes ask the database, so every one is refused from the delete on."""

from __future__ import annotations

import time
import uuid

from mlflow_platform.database.connection import connect
from mlflow_platform.teams import MEMBER_ROLE, ROLE_GRANTS

from .conftest import User

CREATE_MODEL = "/api/2.0/mlflow/registered-models/create"


def _warm(ben: User, workspace: str) -> None:
    """Enough requests that every worker has the workspace in its memo and ben's grants cached:
    reads (kept) and write checks (a duplicate name: the check passes, the create fails)."""
    for _ in range(30):
        assert ben.send("GET", "/api/2.0/mlflow/registered-models/get?name=kept", workspace).status == 200
        assert ben.send("POST", CREATE_MODEL, workspace, body={"name": "kept"}).status == 400


def test_no_write_lands_in_a_workspace_deleted_a_moment_ago(platform, users, monkeypatch) -> None:
    admin, ben = users["admin"], users["ben"]
    name = f"ephemeral-{uuid.uuid4().hex[:8]}"
    created = admin.send("POST", "/api/3.0/mlflow/workspaces", body={"name": name})
    assert created.status == 201, created.text[:300]
    auth = _auth_client(platform, monkeypatch)
    role = auth.create_role(name="ephemeral-member", workspace=name)
    for grant in ROLE_GRANTS[MEMBER_ROLE]:  # a team member's, as `teams sync` grants them
        auth.add_role_permission(role.id, *grant)
    auth.assign_role("ben", role.id)
    first = ben.send("POST", CREATE_MODEL, name, body={"name": "kept"})
    assert first.status == 200, first.text[:300]  # the control: ben may write there
    _warm(ben, name)
    deleted = admin.send("DELETE", f"/api/3.0/mlflow/workspaces/{name}?mode=CASCADE")
    assert deleted.status in (200, 204), deleted.text[:300]
    answers = []
    started = time.monotonic()
    while time.monotonic() - started < 4:  # well inside the 10 s TTL
        answers.append(ben.send("POST", CREATE_MODEL, name, body={"name": f"orphan-{len(answers)}"}).status)
    with connect(platform.database_uri()) as conn:
        orphans = conn.execute("SELECT name FROM registered_models WHERE workspace = %s", (name,)).fetchall()
        conn.execute("DELETE FROM registered_models WHERE workspace = %s", (name,))  # never outlives the test
    assert orphans == [], f"written into the deleted workspace: {orphans}"
    assert 200 not in answers and len(answers) > 20, answers


def _auth_client(platform, monkeypatch):
    """MLflow's own client for roles, as the platform's admin."""
    from mlflow.server.auth.client import AuthServiceClient

    for key, value in platform.client_env().items():
        monkeypatch.setenv(key, value)
    return AuthServiceClient(platform.tracking_uri())
