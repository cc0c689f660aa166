"""Shared fixtures: one local platform per test session (free ports, temp state dir), a local AWS
control-plane API (moto) for DynamoDB and RDS, and the paths tests read."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from mlflow_platform.local.platform import LocalPlatform, Ports
from mlflow_platform.local.processes import free_port

from .paths import LOCAL_STACK


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use a live platform (directly or through a fixture) are marked ``platform``, so
    ``pytest -m "not platform"`` runs the fast ones without starting any server."""
    for item in items:
        if {"platform", "mlflow_client", "client", "aws_api"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.platform)


@pytest.fixture(scope="session")
def platform():
    """Not under pytest's own temp root: any other pytest process run as the same user resets that
    root to 0700, which takes the data directory away from PostgreSQL's user when run as root."""
    work = Path(tempfile.mkdtemp(prefix="mlflow-platform-tests-"))
    local = LocalPlatform(state_dir=work / "state", stack_file=LOCAL_STACK)
    try:
        local.up(Ports.free(), log=lambda _: None)
        yield local
    finally:
        local.down(purge=True, log=lambda _: None)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def mlflow_client(platform: LocalPlatform, monkeypatch: pytest.MonkeyPatch):
    from mlflow import MlflowClient

    for key, value in platform.client_env().items():
        monkeypatch.setenv(key, value)
    return MlflowClient(tracking_uri=platform.tracking_uri())


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
