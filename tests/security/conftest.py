"""The attacker's view of the running local platform: raw HTTP (no client-side path cleanup), the
stack's team users, and one team's data for the others to go after.

In the local stack, `search` may read `ranking` (ranking's `readers`), never the reverse: so `ben`
(a member of ranking) is the attacker and `ana`'s data in `search` the target. Every attack has a
control beside it that must keep working, so the suite cannot pass by breaking the server."""

from __future__ import annotations

import base64
import http.client
import json
import secrets
from dataclasses import dataclass

import pytest
import requests

from mlflow_platform.local.platform import LocalPlatform
from mlflow_platform.team_passwords import PasswordFile

WS = "X-MLFLOW-WORKSPACE"


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    def json(self):
        return json.loads(self.body)


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


@dataclass(frozen=True)
class Wire:
    """Requests exactly as written: no path normalisation, any header (``SCRIPT_NAME`` included)."""

    host: str
    port: int

    def send(self, method: str, path: str, headers: dict | None = None, body: bytes | dict | None = None) -> Answer:
        headers = dict(headers or {})
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            connection.putrequest(method, path, skip_accept_encoding=True)
            for name, value in headers.items():
                connection.putheader(name, value)
            connection.putheader("Content-Length", str(len(body or b"")))
            connection.endheaders(body or b"")
            answer = connection.getresponse()
            return Answer(answer.status, answer.read())
        finally:
            connection.close()


@dataclass(frozen=True)
class User:
    name: str
    password: str
    wire: Wire

    @property
    def auth(self) -> str:
        return basic(self.name, self.password)

    def send(self, method: str, path: str, workspace: str | None = None, headers: dict | None = None, body=None):
        headers = {"Authorization": self.auth, **(headers or {})}
        if workspace:
            headers[WS] = workspace
        return self.wire.send(method, path, headers, body)


@pytest.fixture(scope="session")
def wire(platform: LocalPlatform) -> Wire:
    return Wire("127.0.0.1", platform.state.ports.tracking)


@pytest.fixture(scope="session")
def users(platform: LocalPlatform, wire: Wire) -> dict[str, User]:
    passwords = PasswordFile(platform.team_passwords_file)
    found = {name: User(name, passwords.get(name) or "", wire) for name in ("ana", "ben", "search-lead")}
    found["admin"] = User(platform.config.server.admin_username, platform.secret_values()["admin_password"], wire)
    assert all(u.password for u in found.values()), "teams sync left no password for a stack user"
    return found


@dataclass(frozen=True)
class TeamData:
    workspace: str
    experiment_id: str
    run_id: str
    artifact: str  # the proxied path (after mlflow-artifacts:/) of a file only this team may read
    model: str


def _ok(answer: Answer) -> dict:
    assert answer.status == 200, f"{answer.status} {answer.text[:300]}"
    return answer.json() if answer.body else {}


def populate(user: User, workspace: str) -> TeamData:
    tag = secrets.token_hex(3)
    experiment = _ok(
        user.send("POST", "/api/2.0/mlflow/experiments/create", workspace, body={"name": f"/{workspace}/sec/{tag}"})
    )["experiment_id"]
    run = _ok(user.send("POST", "/api/2.0/mlflow/runs/create", workspace, body={"experiment_id": experiment}))
    run_id = run["run"]["info"]["run_id"]
    artifact = run["run"]["info"]["artifact_uri"].split("mlflow-artifacts:", 1)[1].lstrip("/") + "/secret.txt"
    _ok(
        user.send(
            "PUT", f"/api/2.0/mlflow-artifacts/artifacts/{artifact}", workspace, body=b"only " + workspace.encode()
        )
    )
    model = f"{workspace}-sec-{tag}"
    _ok(user.send("POST", "/api/2.0/mlflow/registered-models/create", workspace, body={"name": model}))
    return TeamData(workspace, experiment, run_id, artifact, model)


@pytest.fixture(scope="session")
def search_data(users: dict[str, User]) -> TeamData:
    """ana's experiment, run, artifact and model in `search`: ben (ranking) may read none of it."""
    return populate(users["ana"], "search")


@pytest.fixture(scope="session")
def ranking_data(users: dict[str, User]) -> TeamData:
    """ben's own data in `ranking`: the controls."""
    return populate(users["ben"], "ranking")


@pytest.fixture(scope="session")
def admin_http(users: dict[str, User], platform: LocalPlatform) -> requests.Session:
    session = requests.Session()
    session.auth = (users["admin"].name, users["admin"].password)
    return session
