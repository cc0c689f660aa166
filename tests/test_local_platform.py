"""The local platform: healthy, idempotent, self-healing, durable, and clear when it can't start."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import time
from pathlib import Path

import psutil
import pytest
import requests

from mlflow_platform.errors import PlatformError
from mlflow_platform.local.platform import LocalPlatform, Ports
from mlflow_platform.local.processes import alive, free_port, spawn

from .paths import LOCAL_STACK

pytestmark = pytest.mark.platform  # every test here starts servers, or uses the session's platform


def statuses(platform: LocalPlatform) -> dict[str, bool]:
    return {row.name: row.healthy for row in platform.status()}


def processes_under(state_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(str(state_dir) in part for part in (proc.info["cmdline"] or [])):
            found.append(proc)
    return found


def test_every_component_is_healthy(platform: LocalPlatform) -> None:
    assert statuses(platform) == {"postgres": True, "s3": True, "tracking": True}


def test_admin_credentials_work_and_anonymous_requests_do_not(platform: LocalPlatform) -> None:
    env = platform.client_env()
    url = f"{env['MLFLOW_TRACKING_URI']}/api/2.0/mlflow/experiments/search"
    assert requests.get(url, params={"max_results": 1}, timeout=10).status_code == 401
    auth = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    assert requests.get(url, params={"max_results": 1}, auth=auth, timeout=10).status_code == 200


def test_postgres_runs_with_the_configured_max_connections(platform: LocalPlatform) -> None:
    pg = platform._postgres(platform.state.ports)
    with pg.connect() as conn:
        assert conn.execute("SHOW max_connections").fetchone()[0] == str(platform.config.database.max_connections)
        names = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
    assert {"mlflow", "mlflow_auth"} <= names


def test_the_server_runs_as_a_role_with_data_rights_only(platform: LocalPlatform) -> None:
    """As in AWS: the migration step (the owner) upgrades the schemas; the server's role may read and
    write rows of both databases but not change their schema, create databases or roles."""
    import psycopg

    pg, d = platform._postgres(platform.state.ports), platform.config.database
    # The step re-runs on every deploy: the second time it updates the role (as the owner, who is no
    # superuser, like the RDS master user) instead of creating it.
    platform._migrate(platform.state.ports, platform._secrets(), log=lambda _: None)
    with pg.connect() as conn:
        sessions = {
            r[0]
            for r in conn.execute("SELECT usename FROM pg_stat_activity WHERE datname = %s", (d.tracking_database,))
        }
        attrs = conn.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = %s", (d.app_username,)
        ).fetchone()
    assert d.app_username in sessions and d.username not in sessions  # the running server's pool
    assert attrs == (False, False, False)
    for database, table in ((d.tracking_database, "runs"), (d.auth_database, "users")):
        with platform._connect_app_role(platform.state.ports, database) as conn:
            conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"ALTER TABLE {table} ADD COLUMN probe integer")
            conn.rollback()
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("CREATE TABLE public.probe (id integer)")


def test_second_up_reuses_what_runs(platform: LocalPlatform) -> None:
    before = dict(platform.state.pids)
    started = time.monotonic()
    platform.up(log=lambda _: None)
    assert platform.state.pids == before
    assert time.monotonic() - started < 5


def test_killed_tracking_server_shows_in_status_and_up_heals_it(platform: LocalPlatform) -> None:
    pid = platform.state.pids["tracking"]
    os.kill(pid, signal.SIGKILL)  # the leader dies; its gunicorn workers are orphaned
    psutil.Process(pid).wait(10) if alive(pid) else None
    assert statuses(platform)["tracking"] is False
    platform.up(log=lambda _: None)
    assert platform.state.pids["tracking"] != pid
    assert statuses(platform) == {"postgres": True, "s3": True, "tracking": True}


def test_port_conflict_is_a_clear_error_and_leaves_nothing_running(tmp_path: Path) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    busy = blocker.getsockname()[1]
    state_dir = tmp_path / "state"
    other = LocalPlatform(state_dir=state_dir, stack_file=LOCAL_STACK)
    try:
        with pytest.raises(PlatformError, match=rf"port {busy} for the tracking server is already in use.*--port"):
            other.up(dataclasses.replace(Ports.free(), tracking=busy), log=lambda _: None)
        assert processes_under(state_dir) == []  # refused before anything started
    finally:
        other.down(log=lambda _: None)
        blocker.close()


def test_a_component_failing_to_start_stops_what_up_started(tmp_path: Path, monkeypatch) -> None:
    """All-or-nothing: the tracking server dies on start, so PostgreSQL and S3 are stopped too."""
    state_dir = tmp_path / "state"
    broken = LocalPlatform(state_dir=state_dir, stack_file=LOCAL_STACK)
    original = broken.server_spec

    def bad_spec(ports=None):
        spec = original(ports)
        return type(spec)(
            argv=(*spec.argv, "--no-such-option"),
            env=spec.env,
            auth_ini=spec.auth_ini,
            auth_config_path=spec.auth_config_path,
            port=spec.port,
        )

    monkeypatch.setattr(broken, "server_spec", bad_spec)
    try:
        with pytest.raises(PlatformError, match="tracking server exited during startup"):
            broken.up(Ports.free(), log=lambda _: None)
        assert processes_under(state_dir) == []
        stopped = {row.name: row.healthy for row in broken.status()}
        assert stopped == {"postgres": False, "s3": False, "tracking": False}
    finally:
        broken.down(purge=True, log=lambda _: None)


def test_up_refuses_to_change_ports_while_running(platform: LocalPlatform) -> None:
    ports = platform.state.ports
    with pytest.raises(PlatformError, match="local down"):
        platform.up(dataclasses.replace(ports, tracking=free_port()), log=lambda _: None)


def test_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PlatformError, match="not found; run `make install`"):
        spawn(["mlflow-platform-no-such-binary"], env={"PATH": "/nonexistent"}, log=tmp_path / "x.log")


def test_secrets_file_is_private(platform: LocalPlatform) -> None:
    mode = (platform.state_dir / "secrets.json").stat().st_mode & 0o777
    assert mode == 0o600


def test_a_stale_pid_that_now_names_a_stranger_is_left_alone(tmp_path: Path) -> None:
    """After a reboot the recorded pid may belong to someone else: down must not kill it."""
    import subprocess

    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        state_dir = tmp_path / "state"
        state_dir.mkdir()
        (state_dir / "state.json").write_text(
            json.dumps({"ports": {}, "pids": {"tracking": stranger.pid, "s3": stranger.pid}})
        )
        stale = LocalPlatform(state_dir=state_dir, stack_file=LOCAL_STACK)
        assert {row.name: row.pid for row in stale.status()}["tracking"] is None
        stale.down(log=lambda _: None)
        assert stranger.poll() is None, "down killed a process that was not the platform's"
    finally:
        stranger.kill()
        stranger.wait()


FASTAPI_ONLY = [
    # (method, path, body): routes MLflow serves only from its FastAPI app (404 under plain gunicorn)
    ("POST", "/ajax-api/3.0/jobs/search", {}),
    ("GET", "/ajax-api/3.0/mlflow/assistant/config", None),
    ("GET", "/api/3.0/mlflow/server-info", None),
]


def test_mlflow3_routes_answer_with_credentials_and_refuse_without(platform: LocalPlatform) -> None:
    """The FastAPI-only surface is served under gunicorn, behind the same basic auth; so is /metrics.
    Only /health answers without credentials."""
    env = platform.client_env()
    base, auth = env["MLFLOW_TRACKING_URI"], (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    for method, path, body in [*FASTAPI_ONLY, ("GET", "/metrics", None), ("POST", "/v1/traces", None)]:
        anonymous = requests.request(method, base + path, json=body, timeout=10)
        assert anonymous.status_code == 401, (path, anonymous.status_code)
    for method, path, body in [*FASTAPI_ONLY, ("GET", "/metrics", None)]:
        answered = requests.request(method, base + path, json=body, auth=auth, timeout=10)
        assert answered.status_code == 200, (path, answered.status_code, answered.text[:200])
    # /v1/traces is there: without the experiment header FastAPI refuses the request (422), not 404.
    assert requests.post(base + "/v1/traces", data=b"", auth=auth, timeout=10).status_code == 422
    assert requests.get(base + "/health", timeout=10).status_code == 200


def _requests_served(base: str, auth: tuple[str, str]) -> float:
    text = requests.get(base + "/metrics", auth=auth, timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("mlflow_http_request_total{") and 'status="200"' in line
    )


def test_metrics_count_requests_across_all_workers(platform: LocalPlatform) -> None:
    """prometheus_client's multiprocess mode: whichever worker answers /metrics reports every
    worker's requests (one worker alone would report only its share)."""
    env = platform.client_env()
    base, auth = env["MLFLOW_TRACKING_URI"], (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    assert platform.config.server.workers > 1
    before = _requests_served(base, auth)
    for _ in range(60):  # a new connection each: gunicorn's workers take turns accepting
        requests.get(f"{base}/api/2.0/mlflow/experiments/search?max_results=1", auth=auth, timeout=10)
    counted = [_requests_served(base, auth) - before for _ in range(4)]
    assert min(counted) >= 60, counted


def test_status_shows_the_artifact_stores_capacity_against_the_alarm(platform: LocalPlatform) -> None:
    """The figure the AWS stacks alarm on (objects and bytes in the bucket), locally."""
    store = platform.object_store(platform.state.ports)
    before, _ = store.usage()
    store.client().put_object(Bucket=store.bucket, Key="capacity-probe/one.bin", Body=b"x" * 2048)
    try:
        objects, size = store.usage()
        assert objects == before + 1 and size >= 2048
        detail = next(row.detail for row in platform.status() if row.name == "s3")
        assert (
            f"{objects:,} objects" in detail
            and f"of the {platform.config.monitoring.artifact_store_max_gb} GB alarm" in detail
        )
    finally:
        store.client().delete_object(Bucket=store.bucket, Key="capacity-probe/one.bin")
