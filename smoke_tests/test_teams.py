"""Teams: two throwaway teams, each in its own workspace, made with the project's own `teams sync`.
A member of one team cannot see the other's experiments, runs, artifacts, models or prompts (403,
or absent from searches); a declared cross-team read grant lets it read and nothing more.
Everything it creates is removed. On a server without workspaces (a stack with no teams) it skips."""

from __future__ import annotations

import secrets

import pytest
import requests

from .target import Target

WS_HEADER = "X-MLFLOW-WORKSPACE"


class MemoryPasswords:
    def __init__(self):
        self.saved: dict[str, str] = {}

    def get(self, username: str) -> str | None:
        return self.saved.get(username)

    def put(self, username: str, password: str) -> None:
        self.saved[username] = password


class Actor:
    """One user, talking to one workspace over plain HTTP, as any client does."""

    def __init__(self, target: Target, username: str, password: str):
        self.target, self.session = target, target.http(auth=False)
        self.session.auth = self.credentials = (username, password)

    def call(self, workspace: str, method: str, path: str, **kwargs) -> requests.Response:
        headers = {WS_HEADER: workspace}
        return self.session.request(method, self.target.url(path), headers=headers, timeout=20, **kwargs)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _workspaces_enabled(target: Target) -> bool:
    answer = target.http().get(target.url("/api/3.0/mlflow/workspaces"), timeout=10)
    return answer.status_code == 200


@pytest.fixture(scope="module")
def teams(target: Target, monkeypatch_module):
    """Team `a` and team `b` (which lets `a` read it), each with one member and its resources."""
    if not _workspaces_enabled(target):
        pytest.skip("this server runs without workspaces (a stack with no teams): team isolation does not apply")
    from mlflow_platform.config import TeamConfig
    from mlflow_platform.teams import sync

    for key, value in (("MLFLOW_TRACKING_USERNAME", target.username), ("MLFLOW_TRACKING_PASSWORD", target.password)):
        monkeypatch_module.setenv(key, value)
    if isinstance(target.verify, str):
        monkeypatch_module.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", target.verify)
    sid = target.session_id.lower()
    a, b = f"smoke-a-{sid}", f"smoke-b-{sid}"
    declared = (
        TeamConfig(name=a, members=(f"{a}-member",)),
        TeamConfig(name=b, members=(f"{b}-member",), readers=(a,)),
    )
    passwords = MemoryPasswords()
    sync(target.uri, declared, passwords)
    actors = {t: Actor(target, f"{t}-member", passwords.saved[f"{t}-member"]) for t in (a, b)}
    made = {t: _populate(actors[t], t) for t in (a, b)}
    yield {"a": a, "b": b, "actors": actors, "made": made}
    _remove(target, declared)


def _populate(actor: Actor, ws: str) -> dict:
    """An experiment with a run, a metric and an artifact, a registered model and a prompt."""
    created = actor.call(ws, "POST", "/api/2.0/mlflow/experiments/create", json={"name": f"/{ws}/smoke/isolation"})
    assert created.status_code == 200, created.text
    experiment_id = created.json()["experiment_id"]
    run = actor.call(ws, "POST", "/api/2.0/mlflow/runs/create", json={"experiment_id": experiment_id})
    assert run.status_code == 200, run.text
    run_id = run.json()["run"]["info"]["run_id"]
    logged = actor.call(
        ws, "POST", "/api/2.0/mlflow/runs/log-metric", json={"run_id": run_id, "key": "m", "value": 1, "timestamp": 1}
    )
    assert logged.status_code == 200, logged.text
    artifact_path = _artifact_path(actor, ws, run_id)
    uploaded = actor.call(ws, "PUT", f"/api/2.0/mlflow-artifacts/artifacts/{artifact_path}", data=b"team data")
    assert uploaded.status_code == 200, uploaded.text
    model = actor.call(ws, "POST", "/api/2.0/mlflow/registered-models/create", json={"name": f"{ws}-model"})
    assert model.status_code == 200, model.text
    prompt = actor.call(
        ws,
        "POST",
        "/api/2.0/mlflow/registered-models/create",
        json={"name": f"{ws}-prompt", "tags": [{"key": "mlflow.prompt.is_prompt", "value": "true"}]},
    )
    assert prompt.status_code == 200, prompt.text
    return {"experiment_id": experiment_id, "run_id": run_id, "artifact": artifact_path}


def _artifact_path(actor: Actor, ws: str, run_id: str) -> str:
    """The run's artifact location as the proxied-artifact path (after `mlflow-artifacts:/`)."""
    info = actor.call(ws, "GET", "/api/2.0/mlflow/runs/get", params={"run_id": run_id}).json()["run"]["info"]
    return info["artifact_uri"].split("mlflow-artifacts:", 1)[1].lstrip("/") + "/evidence.txt"


def _remove(target: Target, declared) -> None:
    admin = target.http()
    for team in declared:
        deleted = admin.delete(
            target.url(f"/api/3.0/mlflow/workspaces/{team.name}"), params={"mode": "CASCADE"}, timeout=60
        )
        assert deleted.status_code in (200, 204), deleted.text
        for username in team.users:
            admin.delete(target.url("/api/2.0/mlflow/users/delete"), json={"username": username}, timeout=10)


def test_a_member_cannot_see_another_teams_resources(teams) -> None:
    """Team a granted team b nothing: b's member gets 403 on each of a's resources and finds none."""
    outsider, ws, made = teams["actors"][teams["b"]], teams["a"], teams["made"][teams["a"]]
    found = outsider.call(ws, "POST", "/api/2.0/mlflow/experiments/search", json={"max_results": 100})
    assert found.status_code == 403 or not found.json().get("experiments"), found.text
    checks = {
        "experiment": outsider.call(
            ws, "GET", "/api/2.0/mlflow/experiments/get", params={"experiment_id": made["experiment_id"]}
        ),
        "run": outsider.call(ws, "GET", "/api/2.0/mlflow/runs/get", params={"run_id": made["run_id"]}),
        "artifact": outsider.call(ws, "GET", f"/api/2.0/mlflow-artifacts/artifacts/{made['artifact']}"),
        "model": outsider.call(ws, "GET", "/api/2.0/mlflow/registered-models/get", params={"name": f"{ws}-model"}),
        "prompt": outsider.call(ws, "GET", "/api/2.0/mlflow/registered-models/get", params={"name": f"{ws}-prompt"}),
    }
    assert {k: r.status_code for k, r in checks.items()} == dict.fromkeys(checks, 403)
    models = outsider.call(ws, "GET", "/api/2.0/mlflow/registered-models/search", params={"max_results": 100})
    assert models.status_code == 403 or not models.json().get("registered_models"), models.text
    # Its own workspace header does not reach them either: resources belong to their workspace.
    own = teams["b"]
    sideways = outsider.call(own, "GET", "/api/2.0/mlflow/runs/get", params={"run_id": made["run_id"]})
    assert sideways.status_code in (403, 404)


def test_a_declared_cross_team_read_grant_reads_and_changes_nothing(teams) -> None:
    reader, ws, made = teams["actors"][teams["a"]], teams["b"], teams["made"][teams["b"]]
    found = reader.call(ws, "POST", "/api/2.0/mlflow/experiments/search", json={"max_results": 100})
    assert made["experiment_id"] in [e["experiment_id"] for e in found.json().get("experiments", [])]
    assert reader.call(ws, "GET", "/api/2.0/mlflow/runs/get", params={"run_id": made["run_id"]}).status_code == 200
    artifact = reader.call(ws, "GET", f"/api/2.0/mlflow-artifacts/artifacts/{made['artifact']}")
    assert artifact.status_code == 200 and artifact.content == b"team data"
    assert reader.call(ws, "GET", "/api/2.0/mlflow/registered-models/get", params={"name": f"{ws}-model"}).ok
    writes = {
        "log metric": reader.call(
            ws,
            "POST",
            "/api/2.0/mlflow/runs/log-metric",
            json={"run_id": made["run_id"], "key": "m", "value": 2, "timestamp": 2},
        ),
        "create experiment": reader.call(
            ws, "POST", "/api/2.0/mlflow/experiments/create", json={"name": f"/{ws}/intruder-{secrets.token_hex(3)}"}
        ),
        "rename model": reader.call(
            ws,
            "PATCH",
            "/api/2.0/mlflow/registered-models/update",
            json={"name": f"{ws}-model", "description": "changed by a reader"},
        ),
        "overwrite artifact": reader.call(
            ws, "PUT", f"/api/2.0/mlflow-artifacts/artifacts/{made['artifact']}", data=b"x"
        ),
    }
    assert {k: r.status_code for k, r in writes.items()} == dict.fromkeys(writes, 403)


def test_a_member_works_in_its_workspace_with_mlflows_own_client(teams, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a team's training code does: MLFLOW_WORKSPACE and the member's credentials, MLflow's
    client (it asks /server-info first, so that route must admit every signed-in user)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    ws, made, other = teams["b"], teams["made"][teams["b"]], teams["a"]  # a granted b nothing
    username, password = teams["actors"][ws].credentials
    for key, value in (("MLFLOW_TRACKING_USERNAME", username), ("MLFLOW_TRACKING_PASSWORD", password)):
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_WORKSPACE", ws)
    client = MlflowClient(teams["actors"][ws].target.uri)
    assert [e.experiment_id for e in client.search_experiments()] == [made["experiment_id"]]
    client.log_metric(made["run_id"], "from_client", 1.0)
    assert client.get_run(made["run_id"]).data.metrics["from_client"] == 1.0
    monkeypatch.setenv("MLFLOW_WORKSPACE", other)  # a workspace it has no role in
    with pytest.raises(MlflowException, match="403|PERMISSION_DENIED|Permission denied"):
        client.get_run(teams["made"][other]["run_id"])
