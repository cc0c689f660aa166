"""The server's edge: forwarder headers a client sends, the dispatch between MLflow's two halves,
and path spellings. Nothing but exact public routes answers without a login, and no header makes a
route look like another one to the authorization code."""

from __future__ import annotations

import pytest

from .conftest import TeamData, User, Wire


def _one_span() -> bytes:
    """An OTLP/HTTP export request holding one span, as the OpenTelemetry SDK sends it."""
    import os

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    span = Span(
        trace_id=os.urandom(16), span_id=os.urandom(8), name="probe", start_time_unix_nano=1, end_time_unix_nano=2
    )
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])])
    return request.SerializeToString()


def _otlp(experiment_id: str) -> dict:
    return {"Content-Type": "application/x-protobuf", "x-mlflow-experiment-id": experiment_id}


@pytest.mark.parametrize(
    ("script_name", "path", "method"),
    [
        ("/health", "/health/ajax-api/3.0/jobs/search", "POST"),
        ("/health", "/health/ajax-api/3.0/mlflow/assistant/config", "GET"),
        ("/health", "/health/api/3.0/mlflow/mcp-servers", "GET"),
        ("/mlflow/server-info", "/mlflow/server-info/ajax-api/3.0/jobs/search", "POST"),
        ("/static-files", "/static-files/api/3.0/mlflow/mcp-servers", "GET"),
    ],
)
def test_a_script_name_header_opens_nothing_without_credentials(wire: Wire, script_name, path, method) -> None:
    answer = wire.send(method, path, {"SCRIPT_NAME": script_name}, body={} if method == "POST" else None)
    assert answer.status in (400, 401, 404), f"{answer.status} {answer.text[:200]}"


def test_a_script_name_header_writes_no_trace_into_another_team(wire: Wire, search_data: TeamData) -> None:
    headers = {"SCRIPT_NAME": "/health", "X-MLFLOW-WORKSPACE": "search", **_otlp(search_data.experiment_id)}
    answer = wire.send("POST", "/health/v1/traces", headers, _one_span())
    assert answer.status in (400, 401, 404), f"{answer.status} {answer.text[:200]}"


def test_a_member_with_a_script_name_gets_no_other_route_rules(users: dict[str, User], search_data: TeamData) -> None:
    """Item 7: a member's own credentials plus the Assistant's prefix as SCRIPT_NAME."""
    ben = users["ben"]
    headers = {"SCRIPT_NAME": "/ajax-api/3.0/mlflow/assistant", **_otlp(search_data.experiment_id)}
    answer = ben.send("POST", "/ajax-api/3.0/mlflow/assistant/v1/traces", "search", headers, _one_span())
    assert answer.status in (400, 403, 404), f"{answer.status} {answer.text[:200]}"
    artifact = f"/ajax-api/3.0/mlflow/assistant/api/2.0/mlflow-artifacts/artifacts/{search_data.artifact}"
    answer = ben.send("GET", artifact, "search", {"SCRIPT_NAME": "/ajax-api/3.0/mlflow/assistant"})
    assert answer.status in (400, 403, 404) and b"only search" not in answer.body, answer.status


def test_otlp_into_ones_own_experiment_still_works(users: dict[str, User], ranking_data: TeamData) -> None:
    """The control for the trace attacks: the same request with the member's credentials."""
    answer = users["ben"].send("POST", "/v1/traces", "ranking", _otlp(ranking_data.experiment_id), _one_span())
    assert answer.status == 200, f"{answer.status} {answer.text[:200]}"


def test_otlp_into_another_teams_experiment_is_refused(users: dict[str, User], search_data: TeamData) -> None:
    answer = users["ben"].send("POST", "/v1/traces", "search", _otlp(search_data.experiment_id), _one_span())
    assert answer.status == 403, f"{answer.status} {answer.text[:200]}"


def test_unauthenticated_artifact_requests_do_not_move_the_artifact_routes(
    wire: Wire, users: dict[str, User], search_data: TeamData
) -> None:
    """Item 6: the first request a worker saw decided, per route, which half served it. Poison every
    worker thread, then try the artifact with and without a forwarder header."""
    for _ in range(24):
        for method in ("GET", "PUT"):
            wire.send(method, "/api/2.0/mlflow-artifacts/artifacts/", body=b"x" if method == "PUT" else None)
    path = f"/api/2.0/mlflow-artifacts/artifacts/{search_data.artifact}"
    for _ in range(8):
        assert wire.send("GET", path).status == 401
        tricked = wire.send("GET", "/health" + path, {"SCRIPT_NAME": "/health", "X-MLFLOW-WORKSPACE": "search"})
        assert tricked.status in (400, 401, 404) and b"only search" not in tricked.body, tricked.status
        assert users["ben"].send("GET", path, "search").status == 403
        own = users["ana"].send("GET", path, "search")  # the control
        assert own.status == 200 and own.body == b"only search", own.status


@pytest.mark.parametrize(
    "path",
    [
        "//api/2.0/mlflow/experiments/search?max_results=1",
        "/api/2.0//mlflow/experiments/search?max_results=1",
        "/api/2.0/mlflow/experiments/search;x=1?max_results=1",
        "/api/2.0/mlflow/./experiments/search?max_results=1",
        "/health/../api/2.0/mlflow/experiments/search?max_results=1",
        "/health/%2e%2e/api/2.0/mlflow/experiments/search?max_results=1",
        "/health%2f..%2fapi/2.0/mlflow/experiments/search?max_results=1",
        "/static-files/../api/2.0/mlflow/experiments/search?max_results=1",
        "/static-files/%2e%2e%2fapi/2.0/mlflow/experiments/search?max_results=1",
        "/API/2.0/mlflow/experiments/search?max_results=1",
        "/healthz",
        "/health/x",
        "/favicon.ico/../api/2.0/mlflow/experiments/search",
        "/api/3.0/mlflow/server-info",
        "/ajax-api/3.0/mlflow/server-info",
        "/ajax-api/3.0/mlflow/ui-telemetry",
        "/v1/traces",
        "/",
    ],
)
@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "POST"])
def test_no_path_spelling_answers_without_a_login(wire: Wire, path: str, method: str) -> None:
    answer = wire.send(method, path, body=b"{}" if method == "POST" else None)
    assert answer.status in (400, 401, 404, 405), f"{method} {path}: {answer.status} {answer.text[:200]}"


@pytest.mark.parametrize("path", ["/health", "/static-files/favicon.ico"])
def test_the_public_routes_answer_without_a_login(wire: Wire, path: str) -> None:
    assert wire.send("GET", path).status == 200
