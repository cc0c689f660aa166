"""Reaching a platform: the local one by its state dir, or any tracking server by URI."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..config import ConfigError
from ..errors import PlatformError
from ..local.platform import LocalPlatform, open_platform
from .output import fail

CONNECT_TIMEOUT = float(os.environ.get("MLFLOW_PLATFORM_CONNECT_TIMEOUT", "10"))


def platform_for(state_dir: Path | None, stack_file: Path | None) -> LocalPlatform:
    try:
        return open_platform(state_dir, stack_file)
    except (ConfigError, PlatformError) as exc:
        raise fail(str(exc)) from None


def local_platform():
    try:
        platform = open_platform()
        platform.secret_values()  # a missing or corrupt secrets file is a one-line error here
    except PlatformError as exc:
        raise fail(str(exc)) from None
    if not platform.started_before:
        raise fail(
            f"no local platform in {platform.state_dir}; start one with `mlflow-platform local up`, "
            "or set MLFLOW_PLATFORM_STATE_DIR"
        )
    return platform


def mlflow_client(tracking_uri: str | None, local: bool, workspace: str | None = None):
    """A client for the server (and, with ``workspace``, that workspace for this whole command)."""
    from mlflow import MlflowClient

    if workspace:
        os.environ["MLFLOW_WORKSPACE"] = workspace

    if local:
        for key, value in local_platform().client_env().items():
            if key.startswith("MLFLOW_TRACKING_"):
                os.environ[key] = value
        tracking_uri = os.environ["MLFLOW_TRACKING_URI"]
    if not tracking_uri:
        raise fail("no tracking server: pass --tracking-uri (or set MLFLOW_TRACKING_URI), or --local")
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    check_connection(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def check_connection(tracking_uri: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Fail in one line, within seconds, when the server is unreachable or refuses the credentials,
    instead of MLflow's minutes of retries followed by a traceback."""
    import requests

    if not tracking_uri.startswith(("http://", "https://")):
        return
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    auth = (user, os.environ.get("MLFLOW_TRACKING_PASSWORD", "")) if user else None
    # The TLS settings MLflow's own client honours, so a private CA is no "cannot reach".
    insecure = os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true"
    verify = False if insecure else os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or True
    try:
        requests.get(f"{tracking_uri}/health", timeout=timeout, verify=verify)
        answer = requests.get(
            f"{tracking_uri}/api/2.0/mlflow/experiments/search",
            params={"max_results": 1},
            auth=auth,
            timeout=timeout,
            verify=verify,
        )
    except requests.RequestException as exc:
        raise fail(
            f"cannot reach {tracking_uri} within {timeout:.0f}s ({type(exc).__name__}); is the server up? "
            "(local: `mlflow-platform local status`)"
        ) from None
    if answer.status_code in (401, 403):
        who = f"user {user!r}" if user else "no credentials (MLFLOW_TRACKING_USERNAME is unset)"
        raise fail(
            f"{tracking_uri} refused {who} ({answer.status_code}); for the local platform run "
            '`eval "$(mlflow-platform local env)"`, else set MLFLOW_TRACKING_USERNAME / _PASSWORD'
        )


def database_uri(backend_store_uri: str | None, local: bool) -> str:
    if local:
        return local_platform().database_uri()
    if not backend_store_uri:
        raise fail("no database: pass --backend-store-uri (password via PGPASSWORD), or --local")
    return backend_store_uri


@contextmanager
def in_workspace(workspace: str | None) -> Iterator[None]:
    """MLflow's own client-side workspace context (the variable every request reads, and
    ``MLFLOW_WORKSPACE`` for threads), restored afterwards; nothing changes without a name."""
    if not workspace:
        yield
        return
    from mlflow.utils.workspace_context import WorkspaceContext

    with WorkspaceContext(workspace):
        yield


def each_workspace(client, workspace: str | None, all_workspaces: bool) -> list[str | None]:
    """The workspaces a runbook visits: the one named (or the client's default), or all of them."""
    from mlflow.exceptions import MlflowException

    if workspace and all_workspaces:
        raise fail("give --workspace or --all-workspaces, not both")
    if not all_workspaces:
        return [workspace]
    try:
        return [w.name for w in client.list_workspaces()]
    except MlflowException as exc:
        raise fail(
            f"--all-workspaces: the server lists no workspaces ({exc.message.splitlines()[0]}); "
            "it runs without them (a stack with no teams): drop the flag"
        ) from None
