"""The narrowed authorization reads (auth_lookups.py) on the running platform, with workspaces on:
a run's experiment and a model's prompt marker come from one row each now, so every check that
reads them is tried from the other team, under every workspace header, on writes as well as reads.
And the two registry namespaces stay apart: a registered-model grant opens no prompt of the same
name. Each attack has its control beside it."""

from __future__ import annotations

import secrets
import time
import uuid

import pytest

from .conftest import TeamData, User

GRANT = "/api/3.0/mlflow/users/permissions/grant"
REVOKE = "/api/3.0/mlflow/users/permissions/revoke"
WORKSPACES = ("search", "ranking", "default", "Search", "search ")
PROMPT_TAG = {"key": "mlflow.prompt.is_prompt", "value": "true"}


def _run_writes(data: TeamData, key: str) -> list[tuple[str, str, dict]]:
    now = int(time.time() * 1000)
    metric = {"key": key, "value": 1.0, "timestamp": now, "step": 0}
    return [
        ("POST", "/api/2.0/mlflow/runs/log-metric", {"run_id": data.run_id, **metric}),
        ("POST", "/api/2.0/mlflow/runs/log-batch", {"run_id": data.run_id, "metrics": [metric]}),
        ("POST", "/api/2.0/mlflow/runs/set-tag", {"run_id": data.run_id, "key": key, "value": "x"}),
        ("POST", "/api/2.0/mlflow/runs/log-parameter", {"run_id": data.run_id, "key": key, "value": "x"}),
    ]


def test_another_teams_run_takes_no_write_under_any_workspace(users: dict[str, User], search_data: TeamData) -> None:
    ben, ana = users["ben"], users["ana"]
    key = f"ben-{secrets.token_hex(3)}"
    for method, path, body in _run_writes(search_data, key):
        for workspace in WORKSPACES:
            answer = ben.send(method, path, workspace, body=body)
            assert answer.status in (400, 403, 404), f"{path} in {workspace!r}: {answer.status}"
    run = ana.send("GET", f"/api/2.0/mlflow/runs/get?run_id={search_data.run_id}", "search")
    assert run.status == 200 and key not in run.text  # nothing ben sent landed
    control = _run_writes(search_data, f"ana-{secrets.token_hex(3)}")
    assert [ana.send(m, p, "search", body=b).status for m, p, b in control] == [200] * len(control)


def test_a_run_that_does_not_exist_is_denied_not_reported_missing(users: dict[str, User]) -> None:
    """MLflow's rule (a missing run denies, so answers are no oracle of which run ids exist) holds
    with the run read from its row."""
    for method, path, body in _run_writes(TeamData("ranking", "0", uuid.uuid4().hex, "", ""), "k"):
        assert users["ben"].send(method, path, "ranking", body=body).status == 403, path


def test_another_teams_model_opens_to_no_registry_read(users: dict[str, User], search_data: TeamData) -> None:
    ana, ben = users["ana"], users["ben"]
    name = search_data.model
    version = ana.send(
        "POST",
        "/api/2.0/mlflow/model-versions/create",
        "search",
        body={"name": name, "source": f"runs:/{search_data.run_id}/model", "run_id": search_data.run_id},
    )
    assert version.status == 200, version.text[:300]
    alias = {"name": name, "alias": "champion", "version": version.json()["model_version"]["version"]}
    assert ana.send("POST", "/api/2.0/mlflow/registered-models/alias", "search", body=alias).status == 200
    reads = [
        f"/api/2.0/mlflow/registered-models/alias?name={name}&alias=champion",
        f"/api/2.0/mlflow/registered-models/get?name={name}",
        f"/api/2.0/mlflow/model-versions/get?name={name}&version=1",
        f"/api/2.0/mlflow/registered-models/get-latest-versions?name={name}",
    ]
    for path in reads:
        for workspace in WORKSPACES:
            answer = ben.send("GET", path, workspace)
            assert answer.status in (400, 403, 404), f"{path} in {workspace!r}: {answer.status}"
        assert ana.send("GET", path, "search").status == 200, path  # the control


@pytest.fixture
def prompt(users: dict[str, User]):
    """A prompt in `search` (a registered model MLflow marks with its prompt tag), one version, an alias."""
    ana, name = users["ana"], f"search-prompt-{secrets.token_hex(3)}"
    made = ana.send(
        "POST", "/api/2.0/mlflow/registered-models/create", "search", body={"name": name, "tags": [PROMPT_TAG]}
    )
    assert made.status == 200, made.text[:300]
    version = ana.send(
        "POST",
        "/api/2.0/mlflow/model-versions/create",
        "search",
        body={
            "name": name,
            "source": "dummy-source",
            "tags": [{"key": "mlflow.prompt.is_prompt", "value": "true"}],
        },
    )
    assert version.status == 200, version.text[:300]
    alias = {"name": name, "alias": "prod", "version": "1"}
    assert ana.send("POST", "/api/2.0/mlflow/registered-models/alias", "search", body=alias).status == 200
    return name


def test_a_model_grant_opens_no_prompt_of_the_same_name(users: dict[str, User], prompt: str) -> None:
    admin, ben = users["admin"], users["ben"]
    read = f"/api/2.0/mlflow/registered-models/alias?name={prompt}&alias=prod"
    as_model = {"username": "ben", "resource_type": "registered_model", "resource_id": prompt}
    as_prompt = {**as_model, "resource_type": "prompt"}
    assert ben.send("GET", read, "search").status == 403  # no grant yet
    try:
        assert admin.send("POST", GRANT, "search", body={**as_model, "permission": "READ"}).status == 200
        time.sleep(0.5)
        assert all(ben.send("GET", read, "search").status == 403 for _ in range(8))  # every worker
        assert admin.send("POST", GRANT, "search", body={**as_prompt, "permission": "READ"}).status == 200
        deadline = time.monotonic() + 30
        while ben.send("GET", read, "search").status != 200:  # the control: the prompt grant opens it
            assert time.monotonic() < deadline, "a READ grant on the prompt never opened it"
            time.sleep(0.2)
    finally:
        admin.send("POST", REVOKE, "search", body=as_model)
        admin.send("POST", REVOKE, "search", body=as_prompt)


def test_a_username_the_database_refuses_is_a_client_error(users: dict[str, User], ranking_data: TeamData) -> None:
    """PostgreSQL refuses a NUL in text: the user lookup answers as MLflow's store does (400), not 500."""
    grant = {"username": "a\u0000b", "resource_type": "experiment", "resource_id": ranking_data.experiment_id}
    answer = users["ben"].send("POST", GRANT, "ranking", body={**grant, "permission": "READ"})
    assert answer.status == 400, f"{answer.status} {answer.text[:200]}"
    control = users["ben"].send("POST", GRANT, "ranking", body={**grant, "username": "nobody", "permission": "READ"})
    assert control.status == 404
    for path in ("/api/2.0/mlflow/users/get?username=a%00b", "/api/3.0/mlflow/users/permissions/list?username=a%00b"):
        assert users["admin"].send("GET", path).status == 400, path
