"""The path dispatch of mlflow_platform.server_app, against MLflow's own route tables."""

from __future__ import annotations

import warnings

import pytest


@pytest.fixture(scope="module")
def native():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mlflow.server import app as flask_app
        from mlflow.server.fastapi_app import create_fastapi_app

    from mlflow_platform.server_app import native_route_matcher

    return native_route_matcher(create_fastapi_app(flask_app), flask_app)


@pytest.mark.parametrize(
    ("method", "path", "to_fastapi"),
    [
        ("POST", "/v1/traces", True),  # OTLP: FastAPI only
        ("POST", "/ajax-api/3.0/jobs/search", True),
        ("GET", "/ajax-api/3.0/mlflow/assistant/config", True),
        ("GET", "/api/3.0/mlflow/mcp-servers", True),
        ("GET", "/api/3.0/mlflow/server-info", False),  # Flask serves it too
        ("POST", "/gateway/my-endpoint/mlflow/invocations", True),
        ("POST", "/api/2.0/mlflow/runs/log-metric", False),  # tracking: Flask, as before
        ("GET", "/api/2.0/mlflow/registered-models/alias", False),
        ("PUT", "/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/x.bin", False),  # both serve it: Flask
        ("GET", "/health", False),
        ("GET", "/v1/traces", False),  # wrong method: Flask answers (404)
        ("GET", "/", False),  # the UI
    ],
)
def test_fastapi_only_routes_go_to_fastapi_and_the_rest_to_flask(native, method: str, path: str, to_fastapi: bool):
    assert native(method, path) is to_fastapi
    assert native(method, path) is to_fastapi  # the per-route decision is cached, and stays right
