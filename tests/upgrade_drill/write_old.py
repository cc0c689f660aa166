"""Runs under an older MLflow (its own virtualenv), against that version's own server: writes what
its users wrote, through its own client APIs, and prints a manifest of it as JSON.

Usage: python write_old.py <tracking-uri>   (MLFLOW_TRACKING_USERNAME/PASSWORD set to the admin)
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import mlflow
import mlflow.server  # not imported by `import mlflow` in 3.x
import pandas as pd
from mlflow import MlflowClient
from mlflow.pyfunc import PythonModel

STEPS = 50


class AddN(PythonModel):
    def __init__(self, n):
        self.n = n

    def predict(self, context, model_input):
        return model_input["x"] + self.n


def write_runs(client: MlflowClient, experiment_id: str, count: int) -> list[dict]:
    from mlflow.entities import Metric

    runs = []
    for i in range(count):
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{i}") as run:
            mlflow.log_params({"lr": str(0.01 * (i + 1)), "batch_size": "64"})
            mlflow.set_tags({"team": "search", "commit": f"{i:040d}"})
            # The whole history in one request: an old basic-auth server hashes the password on
            # every request, so 50 single log_metric calls per run cost minutes, not coverage.
            history = [Metric("loss", 1.0 / (step + 1 + i), 1_700_000_000_000 + step, step) for step in range(STEPS)]
            client.log_batch(run.info.run_id, metrics=history)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "report.bin"
                path.write_bytes(os.urandom(4096 + i))
                mlflow.log_artifact(str(path), artifact_path="reports")
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
        runs.append(
            {
                "run_id": run.info.run_id,
                "params": {"lr": str(0.01 * (i + 1)), "batch_size": "64"},
                "tags": {"team": "search", "commit": f"{i:040d}"},
                "loss": [1.0 / (step + 1 + i) for step in range(STEPS)],
                "artifact": {"path": "reports/report.bin", "sha256": digest},
            }
        )
    return runs


def write_bulk(client: MlflowClient, experiment_id: str, count: int) -> int:
    """Runs as a training pipeline writes them (one batch per run), so the drill's timings mean something."""
    from mlflow.entities import Metric, Param

    for i in range(count):
        run = client.create_run(experiment_id, run_name=f"sweep-{i}")
        metrics = [Metric("loss", 1.0 / (s + 1), 1_700_000_000_000 + s, s) for s in range(STEPS)]
        client.log_batch(run.info.run_id, metrics=metrics, params=[Param("trial", str(i))])
        client.set_terminated(run.info.run_id)
    return count


def write_model(client: MlflowClient, experiment_id: str, name: str) -> dict:
    versions = []
    for n in (1.0, 2.0):
        with mlflow.start_run(experiment_id=experiment_id):
            info = mlflow.pyfunc.log_model(
                artifact_path="model", python_model=AddN(n), input_example=pd.DataFrame({"x": [1.0]})
            )
        version = mlflow.register_model(info.model_uri, name)
        client.set_model_version_tag(name, version.version, "validation_ndcg", str(0.8 + n / 100))
        versions.append(version.version)
    client.set_registered_model_alias(name, "previous-champion", versions[0])
    client.set_registered_model_alias(name, "champion", versions[1])
    return {"name": name, "versions": versions, "champion": versions[1], "add": 2.0}


def write_users(uri: str, experiment_id: str, model: str) -> list[dict]:
    auth = mlflow.server.get_app_client("basic-auth", tracking_uri=uri)
    users = []
    for name, permission in (("alice-drill", "EDIT"), ("bob-drill", "READ")):
        password = hashlib.sha256(name.encode()).hexdigest()[:20]
        auth.create_user(name, password)
        auth.create_experiment_permission(experiment_id, name, permission)
        auth.create_registered_model_permission(model, name, permission)
        users.append({"username": name, "password": password, "permission": permission})
    return users


def main(uri: str) -> None:
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("/search/ranking/drill")
    runs = write_runs(client, experiment_id, 5)
    bulk = write_bulk(client, experiment_id, int(os.environ.get("DRILL_BULK_RUNS", "20")))
    model = write_model(client, experiment_id, "drill-ranker")
    with mlflow.start_run(experiment_id=experiment_id, run_name="to-delete") as doomed:
        mlflow.log_metric("loss", 1.0)
    client.delete_run(doomed.info.run_id)
    users = write_users(uri, experiment_id, model["name"])
    manifest = {
        "mlflow": mlflow.__version__,
        "experiment_id": experiment_id,
        "runs": runs,
        "bulk_runs": bulk,
        "model": model,
        "users": users,
        "deleted_run": doomed.info.run_id,
    }
    print(json.dumps(manifest))


if __name__ == "__main__":
    main(sys.argv[1])
