"""Fault drills against a real local platform: every acknowledged write survives, nothing partial
becomes visible, the object store refuses strangers, and the state dir is private and locked."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import botocore.config
import botocore.exceptions
import psutil
import pytest
import requests

from benchmarks import fault_drills
from mlflow_platform.errors import PlatformError
from mlflow_platform.local.platform import LocalPlatform, Ports

from .paths import LOCAL_STACK

pytestmark = pytest.mark.platform


def processes_under(state_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        try:
            parts = [*(proc.info["cmdline"] or []), proc.info["cwd"] or ""]
        except psutil.Error:
            continue
        if any(str(state_dir) in part for part in parts):
            found.append(proc)
    return found


@pytest.fixture
def drill_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The drills set these in os.environ (no retries, the platform's credentials); recording them
    with setenv makes monkeypatch remove them again afterwards, so no later test inherits them."""
    for key in (
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
    ):
        monkeypatch.setenv(key, "")


def test_postgres_sigkill_loses_no_acknowledged_metric(platform: LocalPlatform, drill_env) -> None:
    result = fault_drills.postgres_killed_while_logging(platform)
    assert result.facts["lost"] == []
    assert result.facts["failures"] > 0, "the kill happened after the loop: the drill proved nothing"
    assert result.facts["acked"] >= 400 // 3
    assert all(row.healthy for row in platform.status())


def test_s3_sigkill_mid_upload_shows_no_partial_object_and_keeps_earlier_ones(
    platform: LocalPlatform, drill_env, tmp_path: Path
) -> None:
    result = fault_drills.s3_killed_during_upload(platform, tmp_path)
    assert result.facts["error"] is not None, "the upload finished before the kill"
    assert result.facts["listed"] == ["before.bin"]
    assert result.facts["identical"]


def test_repeated_20mb_uploads_survive_down_and_up(platform: LocalPlatform, drill_env, tmp_path: Path) -> None:
    def down_and_check(p: LocalPlatform) -> None:
        p.down(log=lambda _: None)
        assert processes_under(p.state_dir) == []
        assert not any("moto" in " ".join(proc.cmdline()) for proc in psutil.process_iter() if _readable(proc))

    result = fault_drills.uploads_survive(platform, tmp_path, down_and_check, "down + up")
    assert result.facts["identical"] == 3


def test_100mb_artifact_survives_kill_9_of_every_process(platform: LocalPlatform, drill_env, tmp_path: Path) -> None:
    result = fault_drills.uploads_survive(
        platform, tmp_path, fault_drills.kill_everything, "kill -9", count=1, megabytes=100
    )
    assert result.facts["identical"] == 1
    assert all(row.healthy for row in platform.status())


def _readable(proc: psutil.Process) -> bool:
    try:
        proc.cmdline()
        return True
    except psutil.Error:
        return False


def _s3(platform: LocalPlatform, **credentials):
    config = botocore.config.Config(retries={"max_attempts": 1}, **credentials.pop("config", {}))
    return boto3.client(
        "s3", endpoint_url=platform.object_store().endpoint_url, region_name="us-east-1", config=config, **credentials
    )


def test_the_object_store_refuses_a_wrong_key_and_no_key(platform: LocalPlatform) -> None:
    s = platform.secret_values()
    strangers = [
        _s3(platform, aws_access_key_id=s["s3_access_key_id"], aws_secret_access_key="not-the-secret"),
        _s3(platform, aws_access_key_id="AKIAINTRUDER", aws_secret_access_key="whatever"),
        _s3(platform, config={"signature_version": botocore.UNSIGNED}),
    ]
    for client in strangers:
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            client.list_objects_v2(Bucket=platform.bucket)
        assert refused.value.response["Error"]["Code"] in {
            "AccessDenied",
            "SignatureDoesNotMatch",
            "InvalidAccessKeyId",
        }
        with pytest.raises(botocore.exceptions.ClientError):
            client.put_object(Bucket=platform.bucket, Key="tampered", Body=b"x")
    owner = platform.s3_client()
    with pytest.raises(botocore.exceptions.ClientError):
        owner.create_bucket(Bucket="another-bucket")  # the identity is scoped to the artifact bucket


def test_seaweedfs_internal_http_apis_need_a_signed_token(platform: LocalPlatform) -> None:
    """The filer and volume servers would serve objects to anyone, bypassing S3 auth, without JWT keys."""
    ports = platform.object_store().internal_ports()
    filer = f"http://127.0.0.1:{ports['filer']}/buckets/{platform.bucket}/"
    assert requests.get(filer, timeout=5).status_code == 401
    assert requests.put(filer + "evil", data=b"x", timeout=5).status_code == 401


def test_every_port_is_loopback_only(platform: LocalPlatform) -> None:
    pids = {p.pid for p in processes_under(platform.state_dir)}
    listening = [c for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN and c.pid in pids]
    assert listening
    assert {c.laddr.ip for c in listening} == {"127.0.0.1"}
    store = platform.object_store()
    assert {c.laddr.port for c in listening if c.pid == platform.state.pids["s3"]} == set(store.all_ports())


def test_state_dir_is_private(platform: LocalPlatform) -> None:
    """Directories 0700 and files 0600, whatever the umask. One exception, unreachable all the same:
    SeaweedFS writes its volume-info files (``*.vif``, a few hundred bytes of volume metadata, no
    artifact content) with a hard-coded 0644, inside its 0700 data directory."""
    for path in [platform.state_dir, *platform.state_dir.rglob("*")]:
        if path.is_symlink() or path.is_socket():
            continue
        mode = path.stat().st_mode & 0o777
        if path.is_dir():
            assert mode in (0o700, 0o710) and (mode == 0o700 or path == platform.state_dir), f"{path}: {oct(mode)}"
        elif path.suffix != ".vif":
            assert mode == 0o600, f"{path} is {oct(mode)}, not 0600"
    assert (platform.state_dir / "s3" / "data").stat().st_mode & 0o777 == 0o700
    state_mode = platform.state_dir.stat().st_mode & 0o777
    assert state_mode == (0o710 if os.geteuid() == 0 else 0o700)  # as root: postgres's own user traverses


def test_gunicorn_opens_no_control_socket(platform: LocalPlatform) -> None:
    """gunicorn's default $HOME/.gunicorn/gunicorn.ctl is shared by every server of the same user:
    the running server's processes hold no control socket at all."""
    server = [p for p in processes_under(platform.state_dir) if os.getpgid(p.pid) == platform.state.pids["tracking"]]
    assert len(server) >= 3  # mlflow, the gunicorn master, its workers
    sockets = [c.laddr for p in server for c in p.net_connections(kind="unix") if c.laddr]
    assert not [s for s in sockets if "gunicorn" in s], sockets


def test_status_reports_a_dead_postgres_and_up_heals_it(platform: LocalPlatform) -> None:
    fault_drills._kill(platform._postgres(platform.state.ports, password=False).pid)
    rows = {row.name: row for row in platform.status()}
    assert not rows["postgres"].healthy and not rows["tracking"].healthy
    assert rows["s3"].healthy
    platform.up(log=lambda _: None)
    assert all(row.healthy for row in platform.status())


def _cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    program = Path(sys.executable).parent / "mlflow-platform"
    return subprocess.run(
        [str(program), *args], capture_output=True, text=True, cwd=cwd, timeout=300, env={**os.environ, **(env or {})}
    )


def test_cli_works_from_any_folder(platform: LocalPlatform, tmp_path: Path) -> None:
    state = str(platform.state_dir)
    env = _cli("local", "env", "--state-dir", state, cwd=tmp_path)
    assert env.returncode == 0 and f"MLFLOW_TRACKING_URI={platform.tracking_uri()}" in env.stdout
    via_env = _cli("local", "status", cwd=tmp_path, env={"MLFLOW_PLATFORM_STATE_DIR": state})
    assert via_env.returncode == 0, via_env.stdout + via_env.stderr
    nothing = _cli("local", "env", "--state-dir", str(tmp_path / "none"), cwd=tmp_path)
    assert nothing.returncode == 1 and nothing.stdout == ""
    assert "no local platform in" in nothing.stderr and "Traceback" not in nothing.stderr


def test_two_concurrent_ups_leave_one_process_group_per_component(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ports = Ports.free()
    args = [
        "local",
        "up",
        "--state-dir",
        str(state),
        "--port",
        str(ports.tracking),
        "--postgres-port",
        str(ports.postgres),
        "--s3-port",
        str(ports.s3),
        "--s3-internal-port",
        str(ports.s3_internal),
    ]
    program = Path(sys.executable).parent / "mlflow-platform"
    both = [
        subprocess.Popen(
            [str(program), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=300)[0] for proc in both]
    platform = LocalPlatform(state, LOCAL_STACK)
    try:
        assert [proc.returncode for proc in both] == [0, 0], outputs
        assert any("reusing" in out for out in outputs), outputs
        pids = platform.state.pids
        groups = {os.getpgid(p.pid) for p in processes_under(state) if p.name() != "postgres"}
        assert groups == {pids["s3"], pids["tracking"]}  # the SSO key is a file: no process of its own
        postmasters = [p for p in processes_under(state) if p.name() == "postgres" and p.parent().name() != "postgres"]
        assert len(postmasters) == 1
    finally:
        platform.down(purge=True, log=lambda _: None)
    assert processes_under(state) == []


def _state_with_data(tmp_path: Path) -> LocalPlatform:
    platform = LocalPlatform(tmp_path / "state", LOCAL_STACK)
    pg_version = platform.state_dir / "postgres" / "data" / "PG_VERSION"
    pg_version.parent.mkdir(parents=True)
    pg_version.write_text("18\n")
    return platform


def test_a_deleted_secrets_file_is_refused_not_regenerated(tmp_path: Path) -> None:
    platform = _state_with_data(tmp_path)
    result = _cli("local", "up", "--state-dir", str(platform.state_dir), cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "secrets.json is missing" in result.stderr and "--purge" in result.stderr
    assert not (platform.state_dir / "secrets.json").exists()


def test_a_truncated_secrets_file_is_a_one_line_error(tmp_path: Path) -> None:
    platform = _state_with_data(tmp_path)
    secrets = platform.state_dir / "secrets.json"
    secrets.write_text('{"postgres_superuser_password": "abc')
    result = _cli("local", "up", "--state-dir", str(platform.state_dir), cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{secrets} is not valid JSON" in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2
    assert secrets.read_text() == '{"postgres_superuser_password": "abc'


def test_a_short_admin_password_is_refused(tmp_path: Path) -> None:
    platform = _state_with_data(tmp_path)
    (platform.state_dir / "secrets.json").write_text(
        json.dumps({"postgres_superuser_password": "x" * 20, "admin_password": "short"})
    )
    result = _cli("local", "up", "--state-dir", str(platform.state_dir), cwd=tmp_path)
    assert result.returncode == 1 and "admin_password has 5 characters" in result.stderr


def test_an_edited_admin_password_is_applied(platform: LocalPlatform) -> None:
    """Applied to the running server's auth database (no restart): the new password logs in, and the
    stored hash no longer matches the old one (the server's 60 s credential cache aside)."""
    from werkzeug.security import check_password_hash

    path = platform.state_dir / "secrets.json"
    original = path.read_text()
    values = json.loads(original)
    old, values["admin_password"] = values["admin_password"], "a-new-admin-password-42"
    path.write_text(json.dumps(values))
    try:
        platform.up(log=lambda _: None)
        url = f"{platform.tracking_uri()}/api/2.0/mlflow/experiments/search"
        assert (
            requests.get(
                url, params={"max_results": 1}, auth=("admin", "a-new-admin-password-42"), timeout=10
            ).status_code
            == 200
        )
        stored = platform._stored_password_hash(platform.state.ports, "admin")
        assert not check_password_hash(stored, old)
    finally:
        path.write_text(original)
        platform.up(log=lambda _: None)
    assert check_password_hash(platform._stored_password_hash(platform.state.ports, "admin"), old)


def test_a_port_held_by_another_platform_names_that_platform(platform: LocalPlatform, tmp_path: Path) -> None:
    other = LocalPlatform(tmp_path / "state", LOCAL_STACK)
    taken = dataclasses.replace(Ports.free(), tracking=platform.state.ports.tracking)
    with pytest.raises(PlatformError) as refused:
        other.up(taken, log=lambda _: None)
    message = str(refused.value)
    assert f"the mlflow-platform in {platform.state_dir} (leader pid {platform.state.pids['tracking']}" in message
    assert "--port" in message
    assert processes_under(other.state_dir) == []
