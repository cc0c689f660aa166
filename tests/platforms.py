"""Throwaway local platforms for tests, and clients of them."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from mlflow_platform.local.platform import LocalPlatform, Ports

from .paths import LOCAL_STACK


@contextmanager
def running_platform(edit_stack: Callable[[dict], None] | None = None) -> Iterator[LocalPlatform]:
    """The local stack (its parsed document changed by ``edit_stack``) up on free ports, purged after.

    Not under pytest's own temp root: any other pytest process run as the same user resets that
    root to 0700, which takes the data directory away from PostgreSQL's user when run as root."""
    work = Path(tempfile.mkdtemp(prefix="mlflow-platform-tests-"))
    stack = LOCAL_STACK
    if edit_stack is not None:
        document = yaml.safe_load(LOCAL_STACK.read_text())
        edit_stack(document)
        stack = work / "stack.yaml"
        stack.write_text(yaml.safe_dump(document))
    local = LocalPlatform(state_dir=work / "state", stack_file=stack)
    try:
        local.up(Ports.free(), log=lambda _: None)
        yield local
    finally:
        local.down(purge=True, log=lambda _: None)
        shutil.rmtree(work, ignore_errors=True)


def admin_client(platform: LocalPlatform, monkeypatch: pytest.MonkeyPatch):
    """MLflow's client as the platform's admin, its environment set for the test only."""
    from mlflow import MlflowClient

    for key, value in platform.client_env().items():
        monkeypatch.setenv(key, value)
    return MlflowClient(tracking_uri=platform.tracking_uri())
