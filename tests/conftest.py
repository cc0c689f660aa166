"""One local platform per test session: started once, on free ports, in a temp state dir."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from mlflow_platform.local.platform import LocalPlatform, Ports

ROOT = Path(__file__).resolve().parent.parent
LOCAL_STACK = ROOT / "stacks" / "local.yaml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory):
    state_dir = tmp_path_factory.mktemp("platform") / "state"
    local = LocalPlatform(state_dir=state_dir, stack_file=LOCAL_STACK)
    try:
        local.up(Ports(tracking=free_port(), postgres=free_port(), s3=free_port()), log=lambda _: None)
        yield local
    finally:
        local.down(purge=True, log=lambda _: None)


@pytest.fixture
def mlflow_client(platform: LocalPlatform, monkeypatch: pytest.MonkeyPatch):
    from mlflow import MlflowClient

    for key, value in platform.client_env().items():
        monkeypatch.setenv(key, value)
    return MlflowClient(tracking_uri=platform.tracking_uri())
