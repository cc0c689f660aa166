"""Artifacts go through the server's proxy and land under the configured bucket prefix."""

import hashlib
import os
from pathlib import Path
from urllib.parse import urlparse

import pytest
from mlflow import MlflowClient

SIZE = 6 * 1024 * 1024  # several MB: more than one read buffer, below multipart


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def uploaded(client: MlflowClient, experiment_id: str, tmp_path_factory):
    source = tmp_path_factory.mktemp("upload") / "weights.bin"
    source.write_bytes(os.urandom(SIZE))
    run = client.create_run(experiment_id)
    client.log_artifact(run.info.run_id, str(source), artifact_path="checkpoints")
    client.set_terminated(run.info.run_id)
    return run, source


def test_artifact_round_trips_byte_identical(client: MlflowClient, uploaded, tmp_path: Path) -> None:
    run, source = uploaded
    listed = client.list_artifacts(run.info.run_id, "checkpoints")
    assert [(f.path, f.file_size) for f in listed] == [("checkpoints/weights.bin", SIZE)]
    downloaded = Path(client.download_artifacts(run.info.run_id, "checkpoints/weights.bin", str(tmp_path)))
    assert _sha256(downloaded) == _sha256(source)


def test_artifact_is_stored_under_the_bucket_prefix(client: MlflowClient, uploaded) -> None:
    """Needs read access to the bucket; locally `mlflow-platform local env` provides it."""
    root = os.environ.get("MLFLOW_PLATFORM_ARTIFACT_ROOT")
    if not root:
        pytest.skip("MLFLOW_PLATFORM_ARTIFACT_ROOT not set: no S3 access to check the bucket layout")
    import boto3

    kwargs = {}
    if os.environ.get("MLFLOW_PLATFORM_S3_ENDPOINT_URL"):
        kwargs = {
            "endpoint_url": os.environ["MLFLOW_PLATFORM_S3_ENDPOINT_URL"],
            "aws_access_key_id": os.environ.get("MLFLOW_PLATFORM_S3_ACCESS_KEY_ID"),
            "aws_secret_access_key": os.environ.get("MLFLOW_PLATFORM_S3_SECRET_ACCESS_KEY"),
            "region_name": "us-east-1",
        }
    s3 = boto3.client("s3", **kwargs)
    run, source = uploaded
    parsed = urlparse(root)
    prefix = parsed.path.strip("/")
    # The run's artifact URI is the proxy, never the bucket: clients need no S3 credentials.
    proxied = client.get_run(run.info.run_id).info.artifact_uri
    assert proxied.startswith("mlflow-artifacts:")
    # Under the prefix: <experiment>/<run>/artifacts, or with workspaces on (a stack with teams)
    # workspaces/<workspace>/<experiment>/<run>/artifacts, MLflow's layout.
    path = proxied.split("mlflow-artifacts:", 1)[1].strip("/")
    assert path.endswith(f"{run.info.experiment_id}/{run.info.run_id}/artifacts"), path
    assert path.count("/") in (2, 4) and (path.count("/") == 2 or path.startswith("workspaces/")), path
    head = s3.head_object(Bucket=parsed.netloc, Key=f"{prefix}/{path}/checkpoints/weights.bin")
    assert head["ContentLength"] == SIZE
