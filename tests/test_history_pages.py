"""A metric history is served a page at a time (history_pages.py): a client that asks for all of a
long history gets one page and MLflow's continuation token; MLflow's own client, which pages,
still reads every point; a request within the page size is untouched."""

from __future__ import annotations

import time
from urllib.parse import parse_qs

import pytest
import requests
from mlflow.entities import Metric

from mlflow_platform.config import load_stack_file
from mlflow_platform.history_pages import capped_query, from_environment, paged
from mlflow_platform.server_spec import Endpoints, render_server

from .paths import LOCAL_STACK

PAGE = 25_000


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("run_id=r&metric_key=loss", "25000"),
        ("run_id=r&metric_key=loss&max_results=1000000", "25000"),
        ("run_id=r&metric_key=loss&max_results=10", "10"),
        ("run_id=r&metric_key=loss&max_results=25000", "25000"),
        # repeated: parsers disagree on which one counts, so neither does
        ("run_id=r&max_results=999999&max_results=5", "25000"),
        ("run_id=r&max_results=5&max_results=abc", "25000"),
    ],
)
def test_a_request_asking_for_more_than_a_page_asks_for_a_page(query: str, expected: str) -> None:
    capped = parse_qs(capped_query(query, PAGE))
    assert capped["max_results"] == [expected]
    assert capped["run_id"] == ["r"]


@pytest.mark.parametrize("value", ["0", "-5", "abc"])
def test_a_limit_mlflow_refuses_is_left_for_mlflow_to_refuse(value: str) -> None:
    query = f"run_id=r&metric_key=loss&max_results={value}"
    assert capped_query(query, PAGE) == query


def test_only_the_history_route_is_rewritten() -> None:
    seen = {}

    def app(environ, start_response):
        seen[environ["PATH_INFO"]] = environ["QUERY_STRING"]
        return [b""]

    served = paged(app, 100)
    for path in ("/api/2.0/mlflow/metrics/get-history", "/api/2.0/mlflow/metrics/get-history-bulk-interval"):
        served({"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "run_id=r"}, None)
    assert seen["/api/2.0/mlflow/metrics/get-history"] == "run_id=r&max_results=100"
    assert seen["/api/2.0/mlflow/metrics/get-history-bulk-interval"] == "run_id=r"


def test_the_rendered_server_sets_the_page_size_and_zero_turns_it_off(monkeypatch) -> None:
    config = load_stack_file(LOCAL_STACK).config.model_copy(update={"sso": None})
    spec = render_server(config, Endpoints(db_host="db", bucket="b"))
    assert {e.name: e.value for e in spec.env}["MLFLOW_PLATFORM_METRIC_HISTORY_PAGE_SIZE"] == "25000"

    def app(environ, start_response):
        return [b""]

    monkeypatch.setenv("MLFLOW_PLATFORM_METRIC_HISTORY_PAGE_SIZE", "0")
    assert from_environment(app) is app


def test_a_long_history_is_paged_by_the_server_and_read_whole_by_mlflow(platform, mlflow_client) -> None:
    experiment = mlflow_client.create_experiment(f"/platform/tests/history-{time.time_ns()}")
    run = mlflow_client.create_run(experiment).info.run_id
    points = PAGE + 1_500
    for first in range(0, points, 1000):
        batch = [
            Metric("loss", 1.0 / (s + 1), 1_700_000_000_000 + s, s) for s in range(first, min(points, first + 1000))
        ]
        mlflow_client.log_batch(run, metrics=batch)
    env = platform.client_env()
    auth = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    url = platform.tracking_uri() + "/api/2.0/mlflow/metrics/get-history"

    whole = requests.get(url, params={"run_id": run, "metric_key": "loss"}, auth=auth, timeout=60).json()
    assert len(whole["metrics"]) == PAGE and whole["next_page_token"]
    rest = requests.get(
        url,
        params={"run_id": run, "metric_key": "loss", "page_token": whole["next_page_token"]},
        auth=auth,
        timeout=60,
    ).json()
    assert len(rest["metrics"]) == 1_500 and "next_page_token" not in rest

    small = requests.get(url, params={"run_id": run, "metric_key": "loss", "max_results": 7}, auth=auth, timeout=60)
    assert len(small.json()["metrics"]) == 7
    refused = requests.get(url, params={"run_id": run, "metric_key": "loss", "max_results": 0}, auth=auth, timeout=60)
    assert refused.status_code == 400

    history = mlflow_client.get_metric_history(run, "loss")
    assert [m.step for m in history] == list(range(points))
