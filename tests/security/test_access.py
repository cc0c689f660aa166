"""Routes MLflow leaves to any signed-in user that change the server for everyone or write into a
workspace without a permission (item 4, item 7's Assistant routes, job submission)."""

from __future__ import annotations

import secrets

import psutil

from mlflow_platform.local.platform import LocalPlatform

from .conftest import TeamData, User


def test_a_user_with_no_role_writes_no_demo_data_into_a_workspace(users: dict[str, User]) -> None:
    ben = users["ben"]
    for workspace in ("search", "ranking"):
        answer = ben.send("POST", "/ajax-api/3.0/mlflow/demo/generate", workspace, body={})
        assert answer.status == 403, f"{workspace}: {answer.status} {answer.text[:200]}"


def test_a_member_cannot_configure_the_assistant_or_install_skills(users: dict[str, User]) -> None:
    ben = users["ben"]
    attempts = [
        ("PUT", "/ajax-api/3.0/mlflow/assistant/config", {"providers": {}}),
        ("POST", "/ajax-api/3.0/mlflow/assistant/skills/install", {"type": "custom", "custom_path": "/tmp/x"}),
        ("POST", "/ajax-api/3.0/mlflow/assistant/message", {"message": "hi"}),
        ("GET", "/ajax-api/3.0/mlflow/assistant/providers/claude_code/health", None),
    ]
    for method, path, body in attempts:
        answer = ben.send(method, path, "ranking", body=body)
        assert answer.status == 403, f"{method} {path}: {answer.status} {answer.text[:200]}"
    # The controls: the UI reads the configuration (without API keys) and the providers on every page.
    assert ben.send("GET", "/ajax-api/3.0/mlflow/assistant/providers", "ranking").status == 200
    config = ben.send("GET", "/ajax-api/3.0/mlflow/assistant/config", "ranking")
    assert config.status == 200
    assert all("api_key" not in provider for provider in config.json()["providers"].values())


def test_a_member_submits_no_job(users: dict[str, User], search_data: TeamData) -> None:
    body = {"job_name": "invoke_scorer", "params": {"experiment_id": search_data.experiment_id}, "timeout": 10}
    for workspace in ("search", "ranking"):
        answer = users["ben"].send("POST", "/ajax-api/3.0/jobs/", workspace, body=body)
        assert answer.status == 403, f"{answer.status} {answer.text[:200]}"  # 422/503 would mean it got in
    searched = users["ben"].send("POST", "/ajax-api/3.0/jobs/search", "ranking", body={})
    assert searched.status in (200, 503), searched.text  # the control: its own jobs (none; jobs may be off)


def test_a_member_still_does_its_work(users: dict[str, User], ranking_data: TeamData) -> None:
    """The control for the whole file: the ordinary routes of an ordinary member."""
    ben = users["ben"]
    name = f"/ranking/sec/ok-{secrets.token_hex(3)}"
    assert ben.send("POST", "/api/2.0/mlflow/experiments/create", "ranking", body={"name": name}).status == 200
    logged = ben.send(
        "POST",
        "/api/2.0/mlflow/runs/log-metric",
        "ranking",
        body={"run_id": ranking_data.run_id, "key": "m", "value": 1, "timestamp": 1},
    )
    assert logged.status == 200
    assert ben.send("GET", "/api/3.0/mlflow/server-info", "ranking").status == 200
    assert ben.send("GET", "/ajax-api/3.0/mlflow/ui-telemetry", "ranking").status == 200


def test_a_workspace_header_opens_nothing_of_another_team(users: dict[str, User], search_data: TeamData) -> None:
    reads = [
        f"/api/2.0/mlflow/experiments/get?experiment_id={search_data.experiment_id}",
        f"/api/2.0/mlflow/runs/get?run_id={search_data.run_id}",
        f"/api/2.0/mlflow/registered-models/get?name={search_data.model}",
        f"/api/2.0/mlflow/metrics/get-history?run_id={search_data.run_id}&metric_key=m",
    ]
    for path in reads:
        for workspace in ("search", "ranking", "default", "Search", "search "):
            answer = users["ben"].send("GET", path, workspace)
            assert answer.status in (400, 403, 404), f"{path} in {workspace!r}: {answer.status}"
        assert users["ana"].send("GET", path, "search").status == 200, path  # the control


def test_the_server_sends_no_usage_data(platform: LocalPlatform, users: dict[str, User]) -> None:
    environment = psutil.Process(platform.state.pids["tracking"]).environ()
    assert environment["MLFLOW_DISABLE_TELEMETRY"] == "true"
    answer = users["ben"].send("GET", "/ajax-api/3.0/mlflow/ui-telemetry", "ranking")
    assert answer.status == 200 and answer.json()["disable_ui_telemetry"] is True


def test_gateway_budget_policies_are_for_admins(users: dict[str, User]) -> None:
    for what in ("list", "windows"):
        for workspace in ("search", "ranking"):
            answer = users["ben"].send("GET", f"/api/3.0/mlflow/gateway/budgets/{what}", workspace)
            assert answer.status == 403, f"{what} in {workspace}: {answer.status}"
    assert users["admin"].send("GET", "/api/3.0/mlflow/gateway/budgets/list", "search").status == 200  # the control
