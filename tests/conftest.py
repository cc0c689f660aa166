"""Shared fixtures: one local platform per test session (free ports, temp state dir), a local AWS
control-plane API (moto) for DynamoDB and RDS, and the paths tests read."""

from __future__ import annotations

import pytest

from mlflow_platform.local.platform import LocalPlatform
from mlflow_platform.local.processes import free_port

from .platforms import admin_client, running_platform


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use a live platform (directly or through a fixture) are marked ``platform``, so
    ``pytest -m "not platform"`` runs the fast ones without starting any server."""
    for item in items:
        if {"platform", "mlflow_client", "client", "replicated", "aws_api"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.platform)


@pytest.fixture(scope="session")
def platform():
    with running_platform() as local:
        yield local


@pytest.fixture
def mlflow_client(platform: LocalPlatform, monkeypatch: pytest.MonkeyPatch):
    return admin_client(platform, monkeypatch)


@pytest.fixture(scope="session")
def aws_api_endpoint():
    """moto's server: a test double for AWS control-plane APIs (not part of the local platform)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def _fake_credentials(monkeypatch: pytest.MonkeyPatch, region: str) -> None:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": region,
    }.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def aws_api(aws_api_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    _fake_credentials(monkeypatch, "us-east-1")
    return aws_api_endpoint


@pytest.fixture
def moto_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """For in-process moto (`mock_aws`): credentials that cannot reach a real account."""
    _fake_credentials(monkeypatch, "eu-west-1")
