"""Users and grants as somebody who is not the server admin: a team admin may not mint password
users (least of all one named like a person who signs in through SSO, item 3), and no member
raises its own rights."""

from __future__ import annotations

import json
import secrets

import requests

from mlflow_platform.local.platform import LocalPlatform

from .conftest import TeamData, User

CREATE = "/api/2.0/mlflow/users/create"


def _sso_get(platform: LocalPlatform, username: str, *groups: str) -> requests.Response:
    header = platform.alb.header(username, groups)
    return requests.get(
        platform.tracking_uri() + "/ajax-api/2.0/mlflow/experiments/search?max_results=1",
        headers={"x-amzn-oidc-data": header, "X-MLFLOW-WORKSPACE": "search"},
        timeout=20,
    )


def test_a_team_admin_cannot_squat_a_persons_sso_name(platform: LocalPlatform, users: dict[str, User]) -> None:
    gina = f"gina-{secrets.token_hex(3)}@example.com"
    for workspace in ("search", None):
        answer = users["search-lead"].send("POST", CREATE, workspace, body={"username": gina, "password": "x" * 16})
        assert answer.status in (400, 403), f"{answer.status} {answer.text[:200]}"
    machine = users["search-lead"].send(
        "POST", CREATE, "search", body={"username": f"bot-{gina[5:11]}", "password": "x" * 16}
    )
    assert machine.status == 403, "in a stack with SSO only the server admin creates password users"
    assert _sso_get(platform, gina, "search-engineers").status_code == 200  # gina still signs in


def test_the_admin_creates_machine_users_but_not_ones_named_like_people(
    platform: LocalPlatform, users: dict[str, User], admin_http: requests.Session
) -> None:
    admin, bot = users["admin"], f"ci-bot-{secrets.token_hex(3)}"
    created = admin.send("POST", CREATE, None, body={"username": bot, "password": secrets.token_urlsafe(16)})
    assert created.status == 200, created.text  # the control
    person = admin.send("POST", CREATE, None, body={"username": f"x{bot}@example.com", "password": "y" * 16})
    assert person.status == 400 and "single sign-on identity" in person.text, person.text
    admin_http.delete(platform.tracking_uri() + "/api/2.0/mlflow/users/delete", json={"username": bot}, timeout=10)


def test_a_person_signed_in_through_sso_cannot_give_itself_a_password(platform: LocalPlatform) -> None:
    person = f"pat-{secrets.token_hex(3)}@example.com"
    assert _sso_get(platform, person, "search-engineers").status_code == 200
    answer = requests.patch(
        platform.tracking_uri() + "/ajax-api/2.0/mlflow/users/update-password",
        json={"username": person, "password": "z" * 16},
        headers={"x-amzn-oidc-data": platform.alb.header(person, ("search-engineers",))},
        timeout=20,
    )
    assert answer.status_code in (400, 403), answer.text
    assert (
        requests.get(
            platform.tracking_uri() + "/api/2.0/mlflow/experiments/search?max_results=1",
            auth=(person, "z" * 16),
            timeout=10,
        ).status_code
        == 401
    )
    assert _sso_get(platform, person, "search-engineers").status_code == 200


def test_a_member_raises_none_of_its_own_rights(users: dict[str, User], search_data: TeamData) -> None:
    ben = users["ben"]
    attempts = [
        ("PATCH", "/api/2.0/mlflow/users/update-admin", {"username": "ben", "is_admin": True}),
        (
            "POST",
            "/api/3.0/mlflow/users/permissions/grant",
            {
                "username": "ben",
                "resource_type": "experiment",
                "resource_id": search_data.experiment_id,
                "permission": "MANAGE",
            },
        ),
        (
            "POST",
            "/api/2.0/mlflow/experiments/permissions/create",
            {"experiment_id": search_data.experiment_id, "username": "ben", "permission": "MANAGE"},
        ),
        ("POST", "/api/3.0/mlflow/roles/create", {"workspace": "search", "name": "ben-role"}),
        ("DELETE", "/api/2.0/mlflow/users/delete", {"username": "ana"}),
        ("PATCH", "/api/2.0/mlflow/users/update-password", {"username": "ana", "password": "w" * 16}),
        ("DELETE", "/api/3.0/mlflow/workspaces/search", None),
        ("POST", "/api/2.0/mlflow/users/create-ui", None),
    ]
    for method, path, body in attempts:
        for workspace in ("search", "ranking"):
            answer = ben.send(method, path, workspace, body=body)
            assert answer.status in (400, 403, 404, 405), f"{method} {path} in {workspace}: {answer.status}"
    assert ben.send("GET", "/api/2.0/mlflow/users/current", "ranking").status == 200  # the control


def _roles(admin: User, workspace: str) -> dict[str, dict]:
    listed = admin.send("GET", f"/api/3.0/mlflow/roles/list?workspace={workspace}")
    assert listed.status == 200, listed.text
    return {r["name"]: r for r in listed.json()["roles"]}


def _permissions(admin: User, role_id: int) -> list[dict]:
    listed = admin.send("GET", f"/api/3.0/mlflow/roles/permissions/list?role_id={role_id}")
    assert listed.status == 200, listed.text
    return listed.json()["role_permissions"]


def test_a_team_admin_cannot_reach_another_teams_roles_through_its_own(users: dict[str, User]) -> None:
    """MLflow authorizes by the first id it finds (role_id), the handlers act on another one."""
    admin, lead = users["admin"], users["search-lead"]
    own = _roles(admin, "search")["team-admin"]["id"]
    reader = _roles(admin, "ranking")["team-reader"]
    target = _permissions(admin, reader["id"])[0]
    attempts = [
        (
            "PATCH",
            "/api/3.0/mlflow/roles/permissions/update",
            {"role_id": own, "role_permission_id": target["id"], "permission": "MANAGE"},
        ),
        ("DELETE", "/api/3.0/mlflow/roles/permissions/remove", {"role_id": own, "role_permission_id": target["id"]}),
        ("POST", "/api/3.0/mlflow/roles/create", {"role_id": own, "workspace": "ranking", "name": "planted"}),
    ]
    for method, path, body in attempts:
        for api in ("/api/", "/ajax-api/"):
            answer = lead.send(method, path.replace("/api/", api, 1), "search", body=body)
            assert answer.status in (400, 403), f"{method} {path}: {answer.status} {answer.text[:200]}"
    assert _permissions(admin, reader["id"])[0] == target  # unchanged
    assert "planted" not in _roles(admin, "ranking")
    assert lead.send("GET", "/api/3.0/mlflow/roles/list?workspace=search", "search").status == 200  # the control


def test_a_non_json_content_type_does_not_walk_around_the_name_check(users: dict[str, User]) -> None:
    person = f"carol-{secrets.token_hex(3)}@example.com"
    for kind in ("application/vnd.mlflow+json", "APPLICATION/JSON", "text/plain"):
        body = json.dumps({"username": person, "password": "p" * 16}).encode()
        answer = users["admin"].send("POST", CREATE, None, {"Content-Type": kind}, body)
        assert answer.status == 400, f"{kind}: {answer.status} {answer.text[:200]}"
