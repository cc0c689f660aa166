"""Permissions: a user without a grant cannot write; an EDIT grant lets it, on every worker within
the server's permission-cache TTL (each worker keeps its answers that long; `--grant-wait`)."""

import secrets
import time

import pytest
import requests

from .target import Target


@pytest.fixture
def user(target: Target, pytestconfig):
    admin = target.http()
    username = f"smoke-user-{target.session_id}"
    password = secrets.token_urlsafe(18)
    response = admin.post(
        target.url("/api/2.0/mlflow/users/create"), json={"username": username, "password": password}, timeout=10
    )
    assert response.status_code == 200, response.text
    yield username, password
    admin.delete(target.url("/api/2.0/mlflow/users/delete"), json={"username": username}, timeout=10)


def _create_run(target: Target, auth, experiment_id: str) -> requests.Response:
    session = target.http(auth=False)
    session.auth = auth
    return session.post(target.url("/api/2.0/mlflow/runs/create"), json={"experiment_id": experiment_id}, timeout=10)


def test_user_needs_edit_grant_to_write(target: Target, experiment_id: str, user, pytestconfig) -> None:
    refused = _create_run(target, user, experiment_id)
    assert refused.status_code == 403, f"write without a grant answered {refused.status_code}"

    granted = target.http().post(
        target.url("/api/3.0/mlflow/users/permissions/grant"),
        json={"username": user[0], "resource_type": "experiment", "resource_id": experiment_id, "permission": "EDIT"},
        timeout=10,
    )
    assert granted.status_code == 200, granted.text

    deadline = time.monotonic() + pytestconfig.getoption("grant_wait")
    allowed = _create_run(target, user, experiment_id)
    while allowed.status_code == 403 and time.monotonic() < deadline:  # a worker that cached "no grant"
        time.sleep(0.5)
        allowed = _create_run(target, user, experiment_id)
    assert allowed.status_code == 200, allowed.text
