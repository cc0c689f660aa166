"""Load benchmark of the tracking server: stock MLflow vs the guide's command vs this project's
rendered configuration (gunicorn and uvicorn), side by side on one PostgreSQL and one S3 API.

    make bench                                   # the comparison (about 9 minutes)
    .venv/bin/python -m benchmarks.tracking_load --tune          # candidate server settings
    .venv/bin/python -m benchmarks.tracking_load --uri https://mlflow.example.com   # any server
        (credentials from MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)

Locally it starts a throwaway platform on free ports (embedded PostgreSQL, the local S3 API),
seeds one data set, then runs each server variant in turn on the same data, so the figures are
comparable within one run. It prints a table, checks the targets, and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import os
import platform as host_platform
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import mlflow
import psutil
import requests
import yaml
from rich.console import Console
from rich.table import Table

from mlflow_platform.config import StackConfig, load_stack_file
from mlflow_platform.local.platform import LocalPlatform, Ports
from mlflow_platform.local.postgres import bin_dir
from mlflow_platform.local.processes import alive, free_port, spawn, stop_group, tail, wait_until
from mlflow_platform.server_spec import render_server

from .loadgen import LevelResult, Operation, process_group, run_level
from .tracking_ops import Fixture, operations

ROOT = Path(__file__).resolve().parent.parent
LEVELS = (1, 8, 32, 64)
SEARCH_RUNS = 10_000
TRAINING_RUNS = 64
TEAMS = ("vision", "nlp", "ranking", "forecasting")
WRITE_P95_SLO_MS = 500.0
SEARCH_P95_TARGET_MS = 1000.0
SEARCH_TARGET_MAX_CLIENTS = 8
console = Console(width=170)


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


def create_client_user(admin: Admin, experiment_id: str) -> tuple[str, str]:
    """A non-admin user with EDIT on the training experiment: permission checks are part of
    every request a real training job makes (an admin skips them)."""
    username, password = f"bench-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex + "Aa1!"
    admin.call("POST", "/api/2.0/mlflow/users/create", json={"username": username, "password": password})
    admin.call(
        "POST",
        "/api/3.0/mlflow/users/permissions/grant",
        json={"username": username, "resource_type": "experiment", "resource_id": experiment_id, "permission": "EDIT"},
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


# -- server variants --------------------------------------------------------------------------------
@dataclass
class Variant:
    key: str
    label: str
    auth: bool
    argv: list[str]
    env: dict[str, str]
    files: dict[str, str] = field(default_factory=dict)


def bench_stack(work: Path, server_overrides: dict, database_overrides: dict) -> Path:
    """The local stack with the renderer's *defaults* for the server (not local.yaml's laptop
    settings) and a PostgreSQL roomy enough that no variant is refused a connection."""
    document = yaml.safe_load((ROOT / "stacks" / "local.yaml").read_text())
    cfg = document["config"]
    cfg["mlflow-platform:server"] = {"replicas": 1, "basicAuth": True, **server_overrides}
    cfg["mlflow-platform:database"] = {"maxConnections": 400, "reservedConnections": 10, **database_overrides}
    path = work / "bench.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


class LocalBench:
    """The throwaway platform and the variants run against its PostgreSQL and S3."""

    def __init__(self, work: Path, server_overrides: dict, database_overrides: dict):
        self.work = work
        self.platform = LocalPlatform(work / "state", bench_stack(work, server_overrides, database_overrides))
        self.ports = Ports.free()

    @property
    def config(self) -> StackConfig:
        return self.platform.config

    def start(self) -> None:
        self.platform.up(self.ports, log=lambda _: None)

    def stop(self) -> None:
        self.platform.down(purge=True, log=lambda _: None)

    def secrets(self) -> dict[str, str]:
        return self.platform.secret_values()

    def admin_auth(self) -> tuple[str, str]:
        return self.config.server.admin_username, self.secrets()["admin_password"]

    def _s3_env(self) -> dict[str, str]:
        return {**self.platform.server_environment(), "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{self.ports.s3}"}

    def stock(self, port: int) -> Variant:
        return Variant(
            "stock",
            "(a) stock `mlflow server`, no auth",
            False,
            [
                "mlflow",
                "server",
                "--backend-store-uri",
                self.platform.database_uri(),
                "--artifacts-destination",
                f"s3://{self.platform.bucket}/stock",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            self._s3_env(),
        )

    def guide(self, port: int) -> Variant:
        """The guide's startup command as written, plus basic-auth with MLflow's default ini
        (credential cache off) pointed at the shared PostgreSQL."""
        from mlflow.server import auth as mlflow_auth

        ini_path = str(self.work / "guide" / "basic_auth.ini")
        default_ini = (Path(mlflow_auth.__file__).parent / "basic_auth.ini").read_text()
        auth_db = self.platform.database_uri(self.config.database.auth_database)
        ini = re.sub(r"(?m)^database_uri = .*$", f"database_uri = {auth_db}", default_ini)
        s = self.secrets()
        return Variant(
            "guide",
            "(b) the guide's command + basic-auth",
            True,
            [
                "mlflow",
                "server",
                "--backend-store-uri",
                self.platform.database_uri(),
                "--default-artifact-root",
                f"s3://{self.platform.bucket}/guide/",
                "--artifacts-destination",
                f"s3://{self.platform.bucket}/guide/",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "4",
                "--gunicorn-opts",
                "--timeout 120 --keep-alive 5",
                "--app-name",
                "basic-auth",
            ],
            {
                **self._s3_env(),
                "MLFLOW_AUTH_CONFIG_PATH": ini_path,
                "MLFLOW_FLASK_SERVER_SECRET_KEY": s["flask_secret_key"],
                "MLFLOW_AUTH_ADMIN_PASSWORD": s["admin_password"],
            },
            {ini_path: ini},
        )

    def rendered(
        self, port: int, *, config: StackConfig | None = None, key: str = "rendered", label: str | None = None
    ) -> Variant:
        spec = render_server(
            config or self.config, self.platform.endpoints(dataclasses.replace(self.ports, tracking=port))
        )
        files = {spec.auth_config_path: spec.auth_ini} if spec.auth_ini and spec.auth_config_path else {}
        return Variant(
            key,
            label or "(c) this project's rendered config (gunicorn)",
            True,
            list(spec.argv),
            self.platform.server_environment(spec),
            files,
        )

    def uvicorn(self, port: int) -> Variant:
        """The rendered configuration served by uvicorn (MLflow 3's default) instead of gunicorn.

        uvicorn runs MLflow's Flask handlers in a 40-thread pool per worker, so the rendered pools
        (sized for gunicorn's threads) time out under load; it gets SQLAlchemy's default 5 + 10,
        as the stock server has, so that uvicorn itself is what is measured."""
        variant = self.rendered(port, key="uvicorn", label="(d) rendered config under uvicorn (pool 5 + 10)")
        argv = variant.argv
        at = argv.index("--gunicorn-opts")
        argv[at : at + 2] = ["--uvicorn-opts", f"--timeout-keep-alive {self.config.server.keep_alive_seconds}"]
        variant.env.update({"MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "5", "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "10"})
        return variant

    def launch(self, variant: Variant) -> int:
        for path, text in variant.files.items():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
        workdir = self.platform.state_dir / f"bench-{variant.key}"  # under the state dir: ours to stop
        workdir.mkdir(parents=True, exist_ok=True)
        log = self.work / "logs" / f"{variant.key}.log"
        pid = spawn(variant.argv, env=variant.env, log=log, cwd=workdir)
        port = int(variant.argv[variant.argv.index("--port") + 1])

        def healthy() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        def died() -> str | None:
            return None if alive(pid) else f"{variant.label} exited; last lines of {log}:\n{tail(log)}"

        if not wait_until(healthy, timeout=120, abort=died):
            stop_group(pid, self.platform.state_dir)
            raise RuntimeError(f"{variant.label} not healthy after 120 s:\n{tail(log)}")
        return pid

    def halt(self, pid: int) -> None:
        stop_group(pid, self.platform.state_dir, timeout=40)


# -- pgbench: the database's own ceiling --------------------------------------------------------------
PGBENCH_SINGLE = """\\set step random(1, 1000000000)
INSERT INTO bench_metrics (key, value, timestamp, run_uuid, step, is_nan)
VALUES ('loss', random(), :step, 'client-' || :client_id, :step, false);
"""
PGBENCH_BATCH = """\\set step random(1, 1000000000)
INSERT INTO bench_metrics (key, value, timestamp, run_uuid, step, is_nan)
SELECT 'train/metric_' || k, random(), :step, 'client-' || :client_id, :step, false
FROM generate_series(0, {n} - 1) AS k;
"""


def pgbench_ceiling(bench: LocalBench, seconds: int, clients: int = 16, batch: int = 20) -> dict:
    """Metric rows/s PostgreSQL takes with no server in the way: rows shaped like MLflow's
    ``metrics`` table (same columns, types and primary key), one per transaction and ``batch``
    per transaction (one log-batch's metrics)."""
    d = bench.config.database
    env = {**os.environ, "PGPASSWORD": bench.secrets()["db_password"]}
    conn = ["-h", "127.0.0.1", "-p", str(bench.ports.postgres), "-U", d.username, d.tracking_database]
    subprocess.run(
        [
            str(bin_dir() / "psql"),
            *conn,
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "DROP TABLE IF EXISTS bench_metrics; CREATE TABLE bench_metrics (LIKE metrics INCLUDING ALL);",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    out = {"clients": clients, "seconds": seconds}
    with tempfile.TemporaryDirectory() as tmp:
        for name, script, rows in (("single_row", PGBENCH_SINGLE, 1), ("batch", PGBENCH_BATCH.format(n=batch), batch)):
            path = Path(tmp) / f"{name}.sql"
            path.write_text(script)
            result = subprocess.run(
                [
                    str(bin_dir() / "pgbench"),
                    "-n",
                    "-c",
                    str(clients),
                    "-j",
                    "2",
                    "-T",
                    str(seconds),
                    "-f",
                    str(path),
                    *conn,
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=seconds + 60,
            )
            match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", result.stdout)
            if result.returncode != 0 or not match:
                raise RuntimeError(f"pgbench failed:\n{result.stdout}\n{result.stderr}")
            tps = float(match.group(1))
            out[name] = {"rows_per_transaction": rows, "tps": round(tps, 1), "rows_per_s": round(tps * rows)}
    subprocess.run(
        [str(bin_dir() / "psql"), *conn, "-q", "-c", "DROP TABLE bench_metrics"],
        env=env,
        check=True,
        capture_output=True,
    )
    return out


# -- running and reporting ---------------------------------------------------------------------------
async def drive(
    ops: list[Operation],
    levels: tuple[int, ...],
    duration: float,
    base_url: str,
    auth: tuple[str, str] | None,
    server_pids: Callable[[], list[int]] | None,
    progress: Callable[[LevelResult], None],
    fresh_runs: Callable[[], None],
    settle_probe: str,
) -> list[LevelResult]:
    fresh_runs()
    for op in ops:  # warm-up: imports, caches, pools; not recorded
        await run_level(op, 4, 0.5, base_url=base_url, auth=auth)
    results = []
    for op in ops:
        for clients in levels:
            fresh_runs()
            result = await run_level(op, clients, duration, base_url=base_url, auth=auth, server_pids=server_pids)
            progress(result)
            results.append(result)
            if result.error_count:
                await settle(base_url, auth, settle_probe)
    return results


async def settle(
    base_url: str, auth: tuple[str, str] | None, probe_path: str, *, quick_s: float = 0.5, limit_s: float = 120.0
) -> None:
    """Wait until the server has worked off requests its clients gave up on (a queued request
    is still served, or still waits for a pool connection, after its client has gone), so they
    do not slow the next level down. The probe reads the database, as /health does not."""
    headers = {"Authorization": aiohttp.encode_basic_auth(*auth)} if auth else None
    deadline = time.monotonic() + limit_s
    quick = 0
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=limit_s)) as session:
        while quick < 2 and time.monotonic() < deadline:
            started = time.monotonic()
            async with session.get(base_url + probe_path) as response:
                await response.read()
            quick = quick + 1 if response.status < 400 and time.monotonic() - started < quick_s else 0
            await asyncio.sleep(0.2)


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def progress_line(variant: str) -> Callable[[LevelResult], None]:
    def show(r: LevelResult) -> None:
        errors = f"  [red]{r.error_count} errors {dict(r.errors)}[/red]" if r.error_count else ""
        console.print(
            f"  {variant:<9} {r.operation:<17} {r.clients:>3} clients  {r.throughput:8.1f}/s  "
            f"p95 {_ms(r.percentile(95)):>6} ms{errors}"
        )

    return show


def results_table(results: dict[str, list[LevelResult]], labels: dict[str, str]) -> Table:
    table = Table(title="Tracking server under load (closed-loop clients, keep-alive)")
    for column, justify in (
        ("server", "left"),
        ("operation", "left"),
        ("clients", "right"),
        ("req/s", "right"),
        ("items/s", "right"),
        ("p50 ms", "right"),
        ("p95 ms", "right"),
        ("p99 ms", "right"),
        ("errors", "right"),
        ("driver CPU", "right"),
        ("server CPU", "right"),
    ):
        table.add_column(column, justify=justify)
    for key, rows in results.items():
        for r in rows:
            items = f"{r.throughput * r.items_per_call:,.0f} {r.item_name}" if r.items_per_call else ""
            table.add_row(
                key,
                r.operation,
                str(r.clients),
                f"{r.throughput:,.1f}",
                items,
                _ms(r.percentile(50)),
                _ms(r.percentile(95)),
                _ms(r.percentile(99)),
                f"[red]{r.error_count}[/red]" if r.error_count else "0",
                f"{r.driver_cpu_percent:.0f}%",
                "—" if r.server_cpu_percent is None else f"{r.server_cpu_percent:.0f}%",
            )
        table.add_section()
    table.caption = "; ".join(f"{k} = {v}" for k, v in labels.items())
    return table


def check_targets(
    results: dict[str, list[LevelResult]], subject: str = "rendered", baseline: str = "stock"
) -> list[dict]:
    """The issue's targets, each with the figures behind its verdict."""
    rows = {(r.operation, r.clients): r for r in results.get(subject, [])}
    base = {(r.operation, r.clients): r for r in results.get(baseline, [])}
    checks = []
    for (op, clients), r in sorted(rows.items()):
        write = op in {"log-batch", "log-metric", "artifact-put-get"}
        if clients == 32 and (op, 32) in base:
            b = base[(op, 32)]
            checks.append(
                {
                    "target": f"{op} @32: {subject} throughput >= {baseline}",
                    "measured": f"{r.throughput:.1f}/s vs {b.throughput:.1f}/s",
                    "met": r.throughput >= b.throughput,
                }
            )
        if clients == 32 and write:
            p95 = r.percentile(95)
            checks.append(
                {
                    "target": f"{op} @32: p95 < {WRITE_P95_SLO_MS:.0f} ms",
                    "measured": f"{_ms(p95)} ms",
                    "met": p95 is not None and p95 < WRITE_P95_SLO_MS,
                }
            )
        if clients == 64:
            checks.append(
                {
                    "target": f"{op} @64: no errors",
                    "measured": f"{r.error_count} errors",
                    "met": r.error_count == 0 and r.ok > 0,
                }
            )
        if op == "search-runs":
            # The target is a query's latency; past a few concurrent searches on 2 cores the p95
            # is queueing (clients / throughput), reported but not judged.
            p95 = r.percentile(95)
            judged = clients <= SEARCH_TARGET_MAX_CLIENTS
            checks.append(
                {
                    "target": f"search-runs @{clients}: p95 < {SEARCH_P95_TARGET_MS:.0f} ms"
                    + ("" if judged else " (queueing; not judged)"),
                    "measured": f"{_ms(p95)} ms",
                    "met": (p95 is not None and p95 < SEARCH_P95_TARGET_MS) if judged else None,
                }
            )
    return checks


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30),
        "processor": host_platform.processor() or host_platform.machine(),
        "python": host_platform.python_version(),
        "mlflow": mlflow.__version__,
    }


def parse_overrides(values: list[str]) -> dict:
    """``key=value`` pairs (camelCase stack keys) with YAML typing: ``workers=2``, ``workerClass=sync``."""
    out = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--server/--database takes key=value (a stack key), got {item!r}")
        out[key] = yaml.safe_load(raw)
    return out


POOL_FOR_4_THREADS = {"poolSize": 3, "maxOverflow": 2}
POOL_FOR_1_THREAD = {"poolSize": 1, "maxOverflow": 1}
TUNING = (
    # (name, server overrides, database overrides): each at 32 clients on the same data. Every
    # setting a name states is explicit, so a later change of default cannot mislabel a candidate
    # (a test renders each and checks workers and threads against its name).
    ("gthread 4x2 (default)", {}, {}),
    ("gthread 4x4", {"threads": 4}, POOL_FOR_4_THREADS),
    ("gthread 2x4", {"workers": 2, "threads": 4}, POOL_FOR_4_THREADS),
    ("gthread 3x4", {"workers": 3, "threads": 4}, POOL_FOR_4_THREADS),
    ("gthread 6x4", {"workers": 6, "threads": 4}, POOL_FOR_4_THREADS),
    ("gthread 6x1", {"workers": 6, "threads": 1}, POOL_FOR_1_THREAD),
    ("gthread 8x1", {"workers": 8, "threads": 1}, POOL_FOR_1_THREAD),
    ("gthread 4x1", {"workers": 4, "threads": 1}, POOL_FOR_1_THREAD),
    ("gthread 4x8", {"workers": 4, "threads": 8}, {"poolSize": 5, "maxOverflow": 4}),
    ("sync 4", {"workerClass": "sync", "workers": 4, "threads": 1}, POOL_FOR_1_THREAD),
    ("sync 8", {"workerClass": "sync", "workers": 8, "threads": 1}, POOL_FOR_1_THREAD),
    ("4x2, no max-requests", {"maxRequests": 0, "maxRequestsJitter": 0}, {}),
    ("4x2, auth cache off", {"authCacheTtlSeconds": 0}, {}),
    ("4x2, basic-auth off (diagnostic)", {"basicAuth": False}, {}),
    ("4x1, basic-auth off (diagnostic)", {"basicAuth": False, "workers": 4, "threads": 1}, POOL_FOR_1_THREAD),
)


def candidate_config(folder: Path, server: dict, database: dict) -> StackConfig:
    """A tuning candidate's configuration, validated like any stack file."""
    folder.mkdir(parents=True, exist_ok=True)
    return load_stack_file(bench_stack(folder, server, database)).config


def run_local(args, ops_filter: set[str] | None) -> dict:
    report: dict = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "duration_s": args.duration,
        "levels": list(args.levels),
    }
    server_overrides, database_overrides = parse_overrides(args.server), parse_overrides(args.database)
    with tempfile.TemporaryDirectory(prefix="mlflow-bench-") as tmp:
        bench = LocalBench(Path(tmp), server_overrides, database_overrides)
        console.print("starting the local platform (embedded PostgreSQL, S3 API) …")
        bench.start()
        try:
            uri = bench.platform.tracking_uri(bench.ports)
            admin = Admin(uri, bench.admin_auth())
            training = admin.experiment("/platform/benchmark/training")
            search = admin.experiment("/platform/benchmark/search")
            user = create_client_user(admin, training)
            ensure_model(admin, "bench-model", training)
            database_uri = bench.platform.database_uri()
            seconds = seed_search_runs_sql(database_uri, search, args.search_runs)
            console.print(
                f"seeded {args.search_runs:,} runs (tags, params, metrics) in {seconds:.1f} s; "
                f"model alias @champion; {TRAINING_RUNS} fresh training runs per level"
            )
            fixture = Fixture(training, [], search, "bench-model")

            def fresh_runs() -> None:
                fixture.run_ids[:] = fresh_training_runs_sql(database_uri, training, TRAINING_RUNS, user[0])

            ops = [op for op in operations(fixture) if not ops_filter or op.name in ops_filter]
            bench.platform.stop_tracking(log=lambda _: None)

            if not args.no_pgbench and args.tune is None:
                console.print(
                    f"pgbench: metric-row inserts straight into PostgreSQL, 16 clients, {args.pgbench_seconds} s each …"
                )
                report["pgbench"] = pgbench_ceiling(bench, args.pgbench_seconds)

            results: dict[str, list[LevelResult]] = {}
            labels: dict[str, str] = {}
            argvs: dict[str, list[str]] = {}
            if args.tune is not None:
                chosen = [plan for plan in TUNING if not args.tune or plan[0] in args.tune]
                # Rounds interleave the candidates (A B C A B C): drift in the machine over the
                # run then shows up as spread within a candidate, not as a difference between them.
                plans = [
                    (name if r == 0 else f"{name} #{r + 1}", s_o, d_o)
                    for r in range(args.rounds)
                    for name, s_o, d_o in chosen
                ]
            else:
                plans = [(key, None, None) for key in args.variants]
            for index, (name, s_over, d_over) in enumerate(plans):
                port = free_port()
                if s_over is not None:
                    config = candidate_config(
                        bench.work / f"tune-{index}", {**server_overrides, **s_over}, {**database_overrides, **d_over}
                    )
                    variant = bench.rendered(port, config=config, key=name, label=name)
                else:
                    variant = getattr(bench, name)(port)
                labels[variant.key], argvs[variant.key] = variant.label, variant.argv
                console.print(f"[bold]{variant.label}[/bold]: {shlex.join(_redact(variant.argv))}")
                pid = bench.launch(variant)
                try:
                    results[variant.key] = asyncio.run(
                        drive(
                            ops,
                            tuple(args.levels),
                            args.duration,
                            f"http://127.0.0.1:{port}",
                            user if variant.auth else None,
                            process_group(pid),
                            progress_line(variant.key),
                            fresh_runs,
                            fixture.probe_path,
                        )
                    )
                finally:
                    bench.halt(pid)
        finally:
            bench.stop()
    report["variants"] = {
        k: {"label": labels[k], "argv": _redact(argvs[k]), "results": [r.as_dict() for r in v]}
        for k, v in results.items()
    }
    report["_results"], report["_labels"] = results, labels
    return report


def _redact(argv: list[str]) -> list[str]:
    return [re.sub(r"//([^:/@]+):[^@]+@", r"//\1:***@", a) for a in argv]


def run_remote(args, ops_filter: set[str] | None) -> dict:
    user = (os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD"))
    auth = user if all(user) else None
    admin = Admin(args.uri, auth)
    training = admin.experiment("/platform/benchmark/training")
    search = admin.experiment("/platform/benchmark/search")
    seconds = seed_search_runs_api(admin, search, args.search_runs)
    console.print(f"search experiment holds {args.search_runs:,}+ runs (topped up in {seconds:.1f} s)")
    ensure_model(admin, "bench-model", training)
    fixture = Fixture(training, [], search, "bench-model")
    created: list[str] = []

    def fresh_runs() -> None:
        fixture.run_ids[:] = training_runs(admin, training, TRAINING_RUNS)
        created.extend(fixture.run_ids)

    ops = [op for op in operations(fixture) if not ops_filter or op.name in ops_filter]
    try:
        results = {
            "target": asyncio.run(
                drive(
                    ops,
                    tuple(args.levels),
                    args.duration,
                    args.uri.rstrip("/"),
                    auth,
                    None,
                    progress_line("target"),
                    fresh_runs,
                    fixture.probe_path,
                )
            )
        }
    finally:  # the benchmark's runs end FINISHED, not left for reap-stuck-runs
        for run_id in created:
            admin.call("POST", "/api/2.0/mlflow/runs/update", json={"run_id": run_id, "status": "FINISHED"})
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "uri": args.uri,
        "levels": list(args.levels),
        "duration_s": args.duration,
        "variants": {"target": {"label": args.uri, "results": [r.as_dict() for r in results["target"]]}},
        "_results": results,
        "_labels": {"target": args.uri},
    }


def markdown_summary(report: dict, clients: int = 32) -> str:
    """The README's table from a JSON report: req/s and p95 per variant and operation."""
    variants = report["variants"]
    ops = list(dict.fromkeys(r["operation"] for v in variants.values() for r in v["results"]))
    lines = ["| server | " + " | ".join(ops) + " |", "|---" * (len(ops) + 1) + "|"]
    for v in variants.values():
        rows = {r["operation"]: r for r in v["results"] if r["clients"] == clients}
        cells = []
        for op in ops:
            r = rows.get(op)
            if r is None:
                cells.append("—")
                continue
            cell = f"{r['throughput_per_s']:,.0f}/s, p95 {r['p95_ms']:,.0f} ms" if r["p95_ms"] else "no answer"
            cells.append(cell + (f", **{r['errors']} errors**" if r["errors"] else ""))
        lines.append(f"| {v['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", help="benchmark this server instead of starting local variants")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["stock", "guide", "rendered", "uvicorn"],
        choices=["stock", "guide", "rendered", "uvicorn"],
    )
    parser.add_argument("--levels", nargs="+", type=int, default=list(LEVELS), help="concurrent clients")
    parser.add_argument(
        "--search-runs", type=int, default=SEARCH_RUNS, help="runs in the search experiment (the targets assume 10,000)"
    )
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per operation and level")
    parser.add_argument(
        "--operations", nargs="+", help="a subset of: log-batch log-metric artifact-put-get search-runs model-by-alias"
    )
    parser.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a server stack key for the rendered variants, e.g. workers=2",
    )
    parser.add_argument(
        "--database",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a database stack key, e.g. poolSize=5",
    )
    parser.add_argument(
        "--tune", nargs="*", metavar="CANDIDATE", help="compare candidate server settings instead (all, or those named)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="with --tune: repeat the candidates, interleaved")
    parser.add_argument("--no-pgbench", action="store_true")
    parser.add_argument("--pgbench-seconds", type=int, default=5)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "tracking_load.json")
    parser.add_argument(
        "--markdown",
        type=Path,
        metavar="JSON",
        help="print a saved report's tables as Markdown (for the README) and exit",
    )
    args = parser.parse_args(argv)
    # `kill` as well as Ctrl-C unwinds through the finally blocks that stop every server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.markdown:
        report = json.loads(args.markdown.read_text())
        for clients in report["levels"]:
            print(f"\n{clients} clients\n\n{markdown_summary(report, clients)}")
        return 0
    if args.tune:  # checked before anything starts
        unknown = sorted(set(args.tune) - {name for name, _, _ in TUNING})
        if unknown:
            parser.error(f"unknown --tune candidate(s) {unknown}; choose from {[name for name, _, _ in TUNING]}")
    if args.tune is not None:
        args.levels = [32] if args.levels == list(LEVELS) else args.levels
        args.operations = args.operations or ["log-batch", "log-metric", "artifact-put-get", "model-by-alias"]
    ops_filter = set(args.operations) if args.operations else None
    started = time.monotonic()
    report = run_remote(args, ops_filter) if args.uri else run_local(args, ops_filter)
    results, labels = report.pop("_results"), report.pop("_labels")
    console.print(results_table(results, labels))
    if "pgbench" in report:
        pg = report["pgbench"]
        batch = [r for r in results.get("rendered", []) if r.operation == "log-batch"]
        best = max((r.throughput * r.items_per_call for r in batch), default=0)
        console.print(
            f"PostgreSQL ceiling (pgbench, {pg['clients']} clients): "
            f"{pg['single_row']['rows_per_s']:,} single-row metric inserts/s, "
            f"{pg['batch']['rows_per_s']:,} metric rows/s in {pg['batch']['rows_per_transaction']}-row "
            f"transactions; the rendered server's best log-batch: {best:,.0f} metrics/s "
            f"({best / pg['single_row']['rows_per_s']:.2f}x the single-row ceiling)"
        )
        report["pgbench"]["rendered_best_log_batch_metrics_per_s"] = round(best)
    if not args.uri and args.tune is None and "rendered" in results:
        checks = check_targets(results)
        report["targets"] = checks
        table = Table(title="Targets (rendered config, basic-auth on)")
        for col in ("target", "measured", "met"):
            table.add_column(col)
        for c in checks:
            verdict = "—" if c["met"] is None else "[green]yes[/green]" if c["met"] else "[red]NO[/red]"
            table.add_row(c["target"], c["measured"], verdict)
        console.print(table)
    report["wall_s"] = round(time.monotonic() - started, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"wrote {args.json} ({report['wall_s']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
