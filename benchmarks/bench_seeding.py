"""The load benchmark's data set: a client user, a registered model with @champion, 10,000 search runs
(bulk-inserted through MLflow's own tables, or through the API against a remote server) and fresh
training runs per level."""

from __future__ import annotations

import time
import uuid

import requests

SEARCH_RUNS = 10_000


TRAINING_RUNS = 64


TEAMS = ("vision", "nlp", "ranking", "forecasting")


# -- the data set ----------------------------------------------------------------------------------
class Admin:
    """The admin's REST session: sets up users, grants, experiments and the registered model."""

    def __init__(self, uri: str, auth: tuple[str, str] | None):
        self.uri, self.http = uri.rstrip("/"), requests.Session()
        self.http.auth = auth

    def call(self, method: str, path: str, **kwargs) -> dict:
        response = self.http.request(method, self.uri + path, timeout=60, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: HTTP {response.status_code}: {response.text[:300]}")
        return response.json() if response.content else {}

    def experiment(self, name: str) -> str:
        try:
            return self.call("GET", "/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": name})[
                "experiment"
            ]["experiment_id"]
        except RuntimeError:
            return self.call("POST", "/api/2.0/mlflow/experiments/create", json={"name": name})["experiment_id"]


def create_client_user(admin: Admin, experiment_id: str, *, reads: tuple[tuple[str, str], ...] = ()) -> tuple[str, str]:
    """A non-admin user with EDIT on the training experiment and READ on ``reads`` (resource type,
    id): permission checks are part of every request a real training job makes (an admin skips
    them), and the grants hold whatever the server's default permission is."""
    username, password = f"bench-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex + "Aa1!"
    admin.call("POST", "/api/2.0/mlflow/users/create", json={"username": username, "password": password})
    for resource_type, resource_id, permission in (
        ("experiment", experiment_id, "EDIT"),
        *((t, i, "READ") for t, i in reads),
    ):
        admin.call(
            "POST",
            "/api/3.0/mlflow/users/permissions/grant",
            json={
                "username": username,
                "resource_type": resource_type,
                "resource_id": resource_id,
                "permission": permission,
            },
        )
    return username, password


def ensure_model(admin: Admin, name: str, experiment_id: str) -> None:
    """A registered model whose ``@champion`` points at a version logged from a run (MLflow
    refuses a proxied source without the run that holds it). Kept if it already exists."""
    try:
        admin.call("GET", "/api/2.0/mlflow/registered-models/alias", params={"name": name, "alias": "champion"})
        return
    except RuntimeError:
        pass
    try:
        admin.call("POST", "/api/2.0/mlflow/registered-models/create", json={"name": name})
    except RuntimeError as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc):
            raise
    run = admin.call(
        "POST", "/api/2.0/mlflow/runs/create", json={"experiment_id": experiment_id, "run_name": "bench-model"}
    )["run"]["info"]
    admin.call("POST", "/api/2.0/mlflow/runs/update", json={"run_id": run["run_id"], "status": "FINISHED"})
    version = admin.call(
        "POST",
        "/api/2.0/mlflow/model-versions/create",
        json={
            "name": name,
            "source": f"{run['artifact_uri']}/model",
            "run_id": run["run_id"],
        },
    )["model_version"]["version"]
    admin.call(
        "POST", "/api/2.0/mlflow/registered-models/alias", json={"name": name, "alias": "champion", "version": version}
    )


def _run_row(run_id: str, name: str, experiment_id: str, start: int, status: str, user: str) -> dict:
    return {
        "run_uuid": run_id,
        "name": name,
        "source_type": "LOCAL",
        "source_name": "train.py",
        "entry_point_name": "",
        "user_id": user,
        "status": status,
        "start_time": start,
        "end_time": start + 30_000 if status == "FINISHED" else None,
        "source_version": "",
        "lifecycle_stage": "active",
        "artifact_uri": f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts",
        "experiment_id": int(experiment_id),
    }


def _insert(database_uri: str, tables: list[tuple[object, list[dict]]], analyze: bool = False) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(database_uri)
    with engine.begin() as conn:
        for model, rows in tables:
            for chunk in range(0, len(rows), 5000):
                conn.execute(model.__table__.insert(), rows[chunk : chunk + 5000])
        if analyze:
            conn.exec_driver_sql("ANALYZE")
    engine.dispose()


def seed_search_runs_sql(database_uri: str, experiment_id: str, count: int) -> float:
    """``count`` finished runs with tags, params and metrics, inserted in bulk into MLflow's own
    tables (through its ORM models). Through the API this would take minutes and measure nothing."""
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag

    started = time.perf_counter()
    now = int(time.time() * 1000)
    runs, tags, params, metrics = [], [], [], []
    for i in range(count):
        run_id = uuid.uuid4().hex
        start = now - (count - i) * 60_000
        runs.append(_run_row(run_id, f"sweep-{i}", experiment_id, start, "FINISHED", "bench"))
        tags += [
            {"key": "team", "value": TEAMS[i % len(TEAMS)], "run_uuid": run_id},
            {"key": "mlflow.runName", "value": f"sweep-{i}", "run_uuid": run_id},
            {"key": "mlflow.user", "value": "bench", "run_uuid": run_id},
        ]
        params += [{"key": f"hp_{k}", "value": str(k * i % 97), "run_uuid": run_id} for k in range(5)]
        metrics += [
            {
                "key": f"val_metric_{k}",
                "value": (i % 100) / 100,
                "timestamp": start,
                "step": 10,
                "is_nan": False,
                "run_uuid": run_id,
            }
            for k in range(5)
        ]
    _insert(
        database_uri,
        [(SqlRun, runs), (SqlTag, tags), (SqlParam, params), (SqlMetric, metrics), (SqlLatestMetric, metrics)],
        analyze=True,
    )
    return time.perf_counter() - started


def fresh_training_runs_sql(database_uri: str, experiment_id: str, count: int, user: str) -> list[str]:
    """New RUNNING runs owned by the client user, in one insert: a fresh set per measured level."""
    from mlflow.store.tracking.dbmodels.models import SqlRun, SqlTag

    now = int(time.time() * 1000)
    ids = [uuid.uuid4().hex for _ in range(count)]
    _insert(
        database_uri,
        [
            (SqlRun, [_run_row(r, f"train-{i}", experiment_id, now, "RUNNING", user) for i, r in enumerate(ids)]),
            (SqlTag, [{"key": "mlflow.user", "value": user, "run_uuid": r} for r in ids]),
        ],
    )
    return ids


def seed_search_runs_api(admin: Admin, experiment_id: str, count: int) -> float:
    """Against a remote server: top the experiment up to ``count`` runs through the API."""
    from concurrent.futures import ThreadPoolExecutor

    started = time.perf_counter()
    existing, token = 0, None
    while existing < count:
        page = admin.call(
            "POST",
            "/api/2.0/mlflow/runs/search",
            json={"experiment_ids": [experiment_id], "max_results": 1000, "page_token": token},
        )
        existing += len(page.get("runs", []))
        token = page.get("next_page_token")
        if not token:
            break

    def one(i: int) -> None:
        run = admin.call(
            "POST",
            "/api/2.0/mlflow/runs/create",
            json={
                "experiment_id": experiment_id,
                "run_name": f"sweep-{i}",
                "tags": [{"key": "team", "value": TEAMS[i % len(TEAMS)]}],
            },
        )["run"]["info"]["run_id"]
        admin.call(
            "POST",
            "/api/2.0/mlflow/runs/log-batch",
            json={
                "run_id": run,
                "params": [{"key": f"hp_{k}", "value": str(k)} for k in range(5)],
                "metrics": [{"key": f"val_metric_{k}", "value": 0.5, "timestamp": 0, "step": 10} for k in range(5)],
            },
        )
        admin.call("POST", "/api/2.0/mlflow/runs/update", json={"run_id": run, "status": "FINISHED"})

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(existing, count)))
    return time.perf_counter() - started


def training_runs(admin: Admin, experiment_id: str, count: int) -> list[str]:
    return list(
        admin.call(
            "POST", "/api/2.0/mlflow/runs/create", json={"experiment_id": experiment_id, "run_name": f"train-{i}"}
        )["run"]["info"]["run_id"]
        for i in range(count)
    )
