"""Single sign-on on the running local platform: the server's real authorization function verifies
headers signed by the local ALB (`local up` serves its key on loopback, as the region's key
endpoint does), maps groups to admin and team roles, and refuses everything else with 401."""

from __future__ import annotations

import http.client
import secrets
import shutil
from urllib.parse import urlsplit

import pytest
import requests

from mlflow_platform.local.platform import LocalPlatform
from mlflow_platform.sso import SSO_ONLY_PASSWORD

WS = "X-MLFLOW-WORKSPACE"


def _person(tag: str) -> str:
    return f"{tag}-{secrets.token_hex(3)}@example.com"


def _as(platform: LocalPlatform, username: str, *groups: str, path: str, workspace: str = "search", **kwargs):
    header = platform.alb.header(username, groups)
    headers = {"x-amzn-oidc-data": header, WS: workspace}
    return requests.request(
        kwargs.pop("method", "GET"), platform.tracking_uri() + path, headers=headers, timeout=20, **kwargs
    )


def _roles(platform: LocalPlatform, username: str) -> tuple[bool, set[tuple[str, str]]]:
    admin = _admin(platform)
    user = requests.get(
        platform.tracking_uri() + "/api/2.0/mlflow/users/get", params={"username": username}, auth=admin, timeout=10
    )
    assert user.status_code == 200, user.text
    listed = requests.get(platform.tracking_uri() + "/api/2.0/mlflow/users/list", auth=admin, timeout=10).json()[
        "users"
    ]
    roles = next(u.get("roles", []) for u in listed if u["username"] == username)
    return user.json()["user"]["is_admin"], {(r["workspace"], r["name"]) for r in roles}


def _admin(platform: LocalPlatform) -> tuple[str, str]:
    return platform.config.server.admin_username, platform.secret_values()["admin_password"]


def test_first_sign_in_creates_the_user_and_groups_decide_admin_and_team_roles(platform: LocalPlatform) -> None:
    person = _person("ana")
    search = "/ajax-api/2.0/mlflow/experiments/search?max_results=5"
    assert _as(platform, person, "search-engineers", path=search).status_code == 200
    assert _roles(platform, person) == (False, {("search", "team-member"), ("ranking", "team-reader")})

    # Promoted: leads group and admins group.
    assert _as(platform, person, "search-leads", "mlflow-admins", path=search).status_code == 200
    assert _roles(platform, person) == (True, {("search", "team-admin"), ("ranking", "team-reader")})

    # Removed from every group: no admin flag, no team role, nothing to see in the team's workspace.
    assert _as(platform, person, path=search).status_code in (200, 403)
    assert _roles(platform, person) == (False, set())


def test_a_team_member_signed_in_sees_its_team_and_not_the_other(platform: LocalPlatform) -> None:
    lead = _person("lead")
    created = _as(
        platform,
        lead,
        "ranking-engineers",
        path="/ajax-api/2.0/mlflow/experiments/create",
        method="POST",
        workspace="ranking",
        json={"name": f"/ranking/sso/{secrets.token_hex(3)}"},
    )
    assert created.status_code == 200, created.text
    experiment = created.json()["experiment_id"]
    get = f"/ajax-api/2.0/mlflow/experiments/get?experiment_id={experiment}"
    outsider = _person("outsider")
    assert _as(platform, outsider, "some-other-group", path=get, workspace="ranking").status_code == 403
    reader = _person("reader")  # search's engineers may read ranking (its `readers`)
    assert _as(platform, reader, "search-engineers", path=get, workspace="ranking").status_code == 200
    rename = _as(
        platform,
        reader,
        "search-engineers",
        path="/ajax-api/2.0/mlflow/experiments/update",
        method="POST",
        workspace="ranking",
        json={"experiment_id": experiment, "new_name": "/ranking/renamed-by-a-reader"},
    )
    assert rename.status_code == 403


def test_an_sso_user_cannot_sign_in_with_a_password(platform: LocalPlatform) -> None:
    person = _person("pw")
    assert (
        _as(
            platform, person, "search-engineers", path="/ajax-api/2.0/mlflow/experiments/search?max_results=5"
        ).status_code
        == 200
    )
    for password in (SSO_ONLY_PASSWORD, "", secrets.token_urlsafe(12)):
        tried = requests.get(
            platform.tracking_uri() + "/api/2.0/mlflow/experiments/search?max_results=5",
            auth=(person, password),
            timeout=10,
        )
        assert tried.status_code == 401


def test_a_bad_header_is_a_401_and_never_falls_back_to_basic_auth(platform: LocalPlatform) -> None:
    url = platform.tracking_uri() + "/ajax-api/2.0/mlflow/experiments/search"
    admin = _admin(platform)
    forged = platform.alb.header("admin@example.com", ("mlflow-admins",))
    header, payload, signature = forged.split(".")
    other = platform.alb.header("ana@example.com", ()).split(".")
    for bad in (f"{header}.{payload}.{other[2]}", "not-a-jwt"):
        answer = requests.get(url, headers={"x-amzn-oidc-data": bad}, auth=admin, timeout=10)
        assert answer.status_code == 401, answer.text  # valid admin credentials do not rescue it
    assert requests.get(url, timeout=10).status_code == 401  # a browser path without the header
    assert requests.get(platform.tracking_uri() + "/", timeout=10).status_code == 401


def test_the_header_is_refused_on_client_paths_and_from_peers_other_than_the_alb(platform: LocalPlatform) -> None:
    answer = _as(platform, _person("api"), "search-engineers", path="/api/2.0/mlflow/experiments/search")
    assert answer.status_code == 401 and "client API" in answer.text
    # From 127.0.0.2: a loopback address, but not the local ALB's (127.0.0.1/32).
    parts = urlsplit(platform.tracking_uri())
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10, source_address=("127.0.0.2", 0))
    header = platform.alb.header(_person("peer"), ("search-engineers",))
    connection.request(
        "GET", "/ajax-api/2.0/mlflow/experiments/search", headers={"x-amzn-oidc-data": header, WS: "search"}
    )
    response = connection.getresponse()
    assert response.status == 401 and b"did not come through the ALB" in response.read()


def test_logout_expires_the_alb_session(platform: LocalPlatform) -> None:
    answer = requests.get(platform.tracking_uri() + "/platform/logout", allow_redirects=False, timeout=10)
    assert answer.status_code == 302
    cookies = answer.raw.headers.getlist("Set-Cookie")
    assert len(cookies) == 4 and all("Max-Age=0" in c and c.startswith("AWSELBAuthSessionCookie-") for c in cookies)


def test_machines_keep_basic_auth(platform: LocalPlatform) -> None:
    """The whole suite runs against this SSO-enabled platform with basic auth; here, explicitly."""
    answer = requests.get(
        platform.tracking_uri() + "/api/2.0/mlflow/experiments/search?max_results=5", auth=_admin(platform), timeout=10
    )
    assert answer.status_code == 200


@pytest.mark.slow
def test_the_ui_renders_for_an_sso_user_in_headless_chromium(platform: LocalPlatform, tmp_path) -> None:
    """Chromium with the header injected on every request (as the ALB does): the home page renders
    with the signed-in user's name, and no request the page made was refused."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("needs Debian's chromium and chromium-driver (.ci/run installs them; apt-get install them)")
    from mlflow_platform.ui_browser import headless_chromium

    person = _person("ui")
    header = platform.alb.header(person, ("search-engineers",), ttl_seconds=600)
    with headless_chromium({"x-amzn-oidc-data": header, WS: "search"}) as browser:
        browser.get(platform.tracking_uri() + "/")
        text = browser.wait_for_text(person)  # the UI shows who is signed in
        statuses = browser.response_statuses()
    assert "Welcome to MLflow" in text
    refused = {url: status for url, status in statuses.items() if status in (401, 403) or status >= 500}
    assert refused == {}, refused
    assert any("/ajax-api/" in url for url in statuses), "the page made no API call"


def test_teams_sync_leaves_the_roles_of_people_signed_in_through_sso(
    platform: LocalPlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Their roles follow their groups; `teams sync --prune` (which runs with
    --keep-undeclared-users by itself when the stack has `sso`) must not strip them."""
    from mlflow_platform.team_passwords import PasswordFile
    from mlflow_platform.teams import sync

    person = _person("kept")
    assert _as(platform, person, "search-engineers", path="/ajax-api/2.0/mlflow/experiments/search?max_results=5").ok
    for key, value in platform.client_env().items():
        monkeypatch.setenv(key, value)
    passwords = PasswordFile(platform.team_passwords_file)
    uri, teams = platform.tracking_uri(), platform.config.teams
    plain = sync(uri, teams, passwords, prune=True, dry_run=True)
    assert any(person in change for change in plain.applied)  # what it would do without the flag
    kept = sync(uri, teams, passwords, prune=True, dry_run=True, keep_undeclared_users=True)
    assert not any(person in change for change in kept.applied + kept.pending_removals)


def test_a_header_naming_a_password_user_is_refused_and_changes_nothing(platform: LocalPlatform) -> None:
    """The bootstrap admin and the stack's team users have passwords: an identity with the same
    name (e.g. preferred_username `admin`) must not become them, or strip their flags and roles."""
    admin_name = platform.config.server.admin_username
    member = platform.config.teams[0].members[0]
    for username in (admin_name, member):
        answer = _as(platform, username, path="/ajax-api/2.0/mlflow/experiments/search?max_results=5")
        assert answer.status_code == 401 and "password user" in answer.text, answer.text
    assert _roles(platform, admin_name)[0] is True  # still the admin
    assert ("search", "team-member") in _roles(platform, member)[1]
