"""Smoke suite for any MLflow platform: a tracking URI plus credentials is all it needs.

    pytest smoke_tests --tracking-uri https://mlflow.example.com --username admin --password ...
    eval "$(mlflow-platform local env)" && pytest smoke_tests

Every name it creates carries a per-session id, so it can run again and again against a shared
server; it only ever reads, changes or deletes what it created itself.
"""

from __future__ import annotations

import os
import secrets
import time

import mlflow
import pytest
from mlflow import MlflowClient

from .target import Target


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mlflow smoke")
    group.addoption(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="Tracking server URL [env MLFLOW_TRACKING_URI].",
    )
    group.addoption(
        "--username",
        default=os.environ.get("MLFLOW_TRACKING_USERNAME"),
        help="Admin user [env MLFLOW_TRACKING_USERNAME].",
    )
    group.addoption(
        "--password",
        default=os.environ.get("MLFLOW_TRACKING_PASSWORD"),
        help="Admin password [env MLFLOW_TRACKING_PASSWORD].",
    )
    group.addoption(
        "--ca-bundle",
        default=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"),
        help="CA bundle for a TLS endpoint [env MLFLOW_TRACKING_SERVER_CERT_PATH].",
    )
    group.addoption(
        "--webhook-host",
        default=os.environ.get("MLFLOW_SMOKE_WEBHOOK_HOST"),
        help="Address the server can reach this machine on, for the webhook test (default: loopback "
        "against a loopback server, else skipped) [env MLFLOW_SMOKE_WEBHOOK_HOST].",
    )
    group.addoption(
        "--grant-wait",
        type=float,
        default=float(os.environ.get("MLFLOW_SMOKE_GRANT_WAIT_SECONDS", "15")),
        help="Seconds a new grant may take to reach every worker: the stack's "
        "server.permissionCacheTtlSeconds (10 by default) plus a margin [env MLFLOW_SMOKE_GRANT_WAIT_SECONDS].",
    )
    group.addoption(
        "--keep-data", action="store_true", help="Leave what the suite created (for debugging) instead of deleting it."
    )


@pytest.fixture(scope="session")
def target(pytestconfig: pytest.Config) -> Target:
    uri = pytestconfig.getoption("tracking_uri")
    username = pytestconfig.getoption("username")
    password = pytestconfig.getoption("password")
    missing = [
        name
        for name, value in (("--tracking-uri", uri), ("--username", username), ("--password", password))
        if not value
    ]
    if missing:
        pytest.exit(
            f"smoke suite needs {', '.join(missing)} (or the MLFLOW_TRACKING_* variables); "
            'locally: eval "$(mlflow-platform local env)"',
            returncode=4,
        )
    ca_bundle = pytestconfig.getoption("ca_bundle")
    _reachable_with_credentials(uri, username, password, ca_bundle or True)
    # The stock client reads these; the suite drives MLflow exactly as an ML team would.
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["MLFLOW_TRACKING_USERNAME"] = username
    os.environ["MLFLOW_TRACKING_PASSWORD"] = password
    if ca_bundle:
        os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"] = ca_bundle
    mlflow.set_tracking_uri(uri)
    session_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    return Target(uri, username, password, ca_bundle or True, session_id)


def _reachable_with_credentials(uri: str, username: str, password: str, verify, timeout: float = 10.0) -> None:
    """Fail at once, in one line, when the server does not answer or refuses the credentials:
    MLflow's client would otherwise retry for minutes before every test fails the same way."""
    import requests

    try:
        requests.get(f"{uri}/health", timeout=timeout, verify=verify)
        answer = requests.get(
            f"{uri}/api/2.0/mlflow/experiments/search",
            params={"max_results": 1},
            auth=(username, password),
            timeout=timeout,
            verify=verify,
        )
    except requests.RequestException as exc:
        pytest.exit(f"cannot reach {uri} within {timeout:.0f}s ({type(exc).__name__}); is it up?", returncode=4)
    if answer.status_code in (401, 403):
        pytest.exit(f"{uri} refused user {username!r} ({answer.status_code}); check the password", returncode=4)


@pytest.fixture(scope="session")
def client(target: Target) -> MlflowClient:
    return MlflowClient(tracking_uri=target.uri, registry_uri=target.uri)


@pytest.fixture(scope="session")
def experiment_id(target: Target, client: MlflowClient, pytestconfig: pytest.Config):
    """One experiment per session, named like a team's: /{team}/{project}/{experiment-type}."""
    name = f"/platform-smoke/run-{target.session_id}/smoke"
    experiment_id = client.create_experiment(name, tags={"team": "platform", "purpose": "smoke"})
    yield experiment_id
    if not pytestconfig.getoption("keep_data"):
        client.delete_experiment(experiment_id)
