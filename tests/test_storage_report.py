"""The artifact store's usage per workspace, experiment and storage class (runbooks/storage.py):
grouped from the key layout MLflow's proxy writes, and read from the live platform's SeaweedFS."""

from __future__ import annotations

import time

from mlflow_platform.runbooks.storage import owner, storage_report, summarize


def test_keys_are_grouped_by_the_layout_the_proxy_writes() -> None:
    assert owner("12/abc/artifacts/model.pkl") == ("default", "12")
    assert owner("workspaces/search/7/abc/artifacts/x") == ("search", "7")
    assert owner("README") == ("default", "(top level)")


def test_every_byte_is_counted_once_in_each_grouping() -> None:
    objects = [
        {"Key": "prod/12/r1/artifacts/a", "Size": 100, "StorageClass": "STANDARD"},
        {"Key": "prod/12/r2/artifacts/b", "Size": 50, "StorageClass": "STANDARD_IA"},
        {"Key": "prod/workspaces/search/7/r3/artifacts/c", "Size": 7},
        {"Key": "prod/workspaces/search/8/r4/artifacts/d", "Size": 3, "StorageClass": "GLACIER_IR"},
    ]
    report = summarize("bucket", "prod", objects)
    assert (report.total.objects, report.total.bytes) == (4, 160)
    assert {k: v.bytes for k, v in report.by_workspace.items()} == {"default": 150, "search": 10}
    assert {k: v.bytes for k, v in report.by_class.items()} == {"STANDARD": 107, "STANDARD_IA": 50, "GLACIER_IR": 3}
    assert report.top_experiments(1)[0][0] == ("default", "12")
    assert sum(u.bytes for u in report.by_experiment.values()) == 160


def test_the_report_reads_the_live_store(platform, mlflow_client, tmp_path) -> None:
    experiment = mlflow_client.create_experiment(f"/platform/tests/storage-{time.time_ns()}")
    run = mlflow_client.create_run(experiment).info.run_id
    payload = tmp_path / "weights.bin"
    payload.write_bytes(b"x" * 12_345)
    mlflow_client.log_artifact(run, str(payload))
    report = storage_report(platform.s3_client(), platform.bucket, platform.config.artifacts.prefix)
    mine = report.by_experiment[("default", experiment)]
    assert (mine.objects, mine.bytes) == (1, 12_345)
    assert report.total.bytes >= 12_345


def test_the_command_prints_each_grouping_for_the_local_platform(platform) -> None:
    from typer.testing import CliRunner

    from mlflow_platform.cli import app

    env = {"MLFLOW_PLATFORM_STATE_DIR": str(platform.state_dir)}
    result = CliRunner().invoke(app, ["storage-report", "--local", "--top", "3"], env=env, terminal_width=200)
    assert result.exit_code == 0, result.output
    prefix = platform.config.artifacts.prefix
    assert f"s3://{platform.bucket}/{prefix}:" in result.output
    assert all(title in result.output for title in ("by workspace", "by storage class", "largest 3 experiments"))
    missing = CliRunner().invoke(app, ["storage-report"], env=env)
    assert missing.exit_code != 0 and "pass --bucket" in missing.output and "Traceback" not in missing.output
