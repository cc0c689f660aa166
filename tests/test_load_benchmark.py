"""The load benchmark's driver counts what it claims to, and its operations are valid MLflow calls.

The figures themselves come from `make bench`; these tests prove the instrument, not the server.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
import uuid

import pytest
from aiohttp import web

from benchmarks.bench_report import check_targets
from benchmarks.bench_seeding import (
    TEAMS,
    Admin,
    create_client_user,
    ensure_model,
    fresh_training_runs_sql,
    seed_search_runs_sql,
)
from benchmarks.bench_servers import TUNING, LocalBench, candidate_config, parse_overrides
from benchmarks.loadgen import UNFINISHED, Operation, percentile, run_level
from benchmarks.tracking_ops import SEARCH_PAGE, SPANS_PER_EXPORT, Fixture, operations
from mlflow_platform.local.platform import LocalPlatform


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


def drive_against(handler, *, clients: int, duration_s: float, **kwargs):
    """Run one level against a throwaway aiohttp server answering GET / with ``handler``;
    returns the result and the seconds the level took."""

    async def scenario():
        app = web.Application()
        app.router.add_get("/", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        try:

            async def call(client):
                await client.call("GET", "/")

            started = time.monotonic()
            result = await run_level(
                Operation("get", False, call),
                clients,
                duration_s,
                base_url=f"http://127.0.0.1:{port}",
                auth=None,
                **kwargs,
            )
            return result, time.monotonic() - started
        finally:
            await runner.cleanup()

    return asyncio.run(scenario())


def test_driver_counts_errors_and_keeps_them_out_of_latencies() -> None:
    """Every third answer is a 503: the driver must count, not hide, those."""
    hits = {"n": 0}

    async def flaky(request: web.Request) -> web.Response:
        hits["n"] += 1
        return web.Response(status=503 if hits["n"] % 3 == 0 else 200, text="{}")

    result, _ = drive_against(flaky, clients=4, duration_s=0.5)
    assert result.ok + result.error_count == hits["n"]
    assert result.errors["HTTP 503"] == hits["n"] // 3
    assert len(result.latencies_ms) == result.ok
    assert result.throughput == pytest.approx(result.ok / result.elapsed_s)
    assert 0 < result.driver_cpu_percent <= 200


def test_calls_unanswered_after_the_tail_are_counted_as_unfinished() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.Response(text="{}")

    result, seconds = drive_against(slow, clients=3, duration_s=0.2, tail_s=0.3)
    assert seconds < 2, "the tail did not bound the level"
    assert result.ok == 0 and result.errors == {UNFINISHED: 3}
    assert UNFINISHED in result.error_samples


def test_driver_reports_refused_connections() -> None:
    async def call(client):
        await client.call("GET", "/")

    result = asyncio.run(run_level(Operation("x", False, call), 2, 0.2, base_url="http://127.0.0.1:9", auth=None))
    assert result.ok == 0 and result.error_count > 0
    assert set(result.errors) <= {"ClientConnectorError", "ClientOSError", "ConnectionRefusedError"}


def test_overrides_are_typed_stack_keys() -> None:
    assert parse_overrides(["workers=2", "workerClass=sync", "authCacheTtlSeconds=0"]) == {
        "workers": 2,
        "workerClass": "sync",
        "authCacheTtlSeconds": 0,
    }
    with pytest.raises(SystemExit, match="key=value"):
        parse_overrides(["workers"])


def test_bench_stack_renders_the_server_defaults(tmp_path) -> None:
    from mlflow_platform.config import ServerConfig

    bench = LocalBench(tmp_path, {}, {})
    server = bench.config.server
    defaults = ServerConfig()
    assert (server.workers, server.worker_class, server.threads, server.auth_cache_ttl_seconds) == (
        defaults.workers,
        defaults.worker_class,
        defaults.threads,
        defaults.auth_cache_ttl_seconds,
    )
    argv = bench.uvicorn(5999).argv
    assert "--gunicorn-opts" not in argv and "--uvicorn-opts" in argv
    assert "--enable-workspaces" not in bench.rendered(5997).argv  # the published figures: one workspace
    workspaces = bench.workspaces(5996)
    assert "--enable-workspaces" in workspaces.argv
    assert "default_permission = NO_PERMISSIONS" in workspaces.files[workspaces.env["MLFLOW_AUTH_CONFIG_PATH"]]
    guide = bench.guide(5998)
    assert guide.argv[guide.argv.index("--gunicorn-opts") + 1] == "--timeout 120 --keep-alive 5"
    ini = guide.files[guide.env["MLFLOW_AUTH_CONFIG_PATH"]]
    assert not re.search(r"(?m)^auth_cache_ttl_seconds", ini)  # MLflow's default: cache off
    assert re.search(r"(?m)^database_uri = postgresql", ini)


@pytest.mark.parametrize("candidate", TUNING, ids=lambda c: c[0])
def test_tuning_candidates_are_valid_and_are_what_their_names_say(candidate, tmp_path) -> None:
    name, server, database = candidate
    config = candidate_config(tmp_path, server, database)  # a ConfigError fails the test
    s = config.server
    shape = re.search(r"(gthread|sync) (\d+)(?:x(\d+))?|(\d+)x(\d+)", name)
    if shape.group(4):  # "4x2, ..." variants are gthread
        expected = ("gthread", int(shape.group(4)), int(shape.group(5)))
    else:
        expected = (shape.group(1), int(shape.group(2)), int(shape.group(3) or 1))
    assert (s.worker_class, s.workers, s.threads) == expected
    assert ("(default)" in name) == (server == {} and database == {})


def test_targets_compare_like_with_like() -> None:
    from benchmarks.loadgen import LevelResult

    def r(op, clients, ok, lat, errors=0):
        from collections import Counter

        return LevelResult(op, clients, ok, 1.0, [lat] * max(ok, 1), Counter({"HTTP 500": errors}))

    results = {
        "rendered": [r("log-metric", 32, 150, 200), r("log-metric", 64, 150, 400, errors=1)],
        "stock": [r("log-metric", 32, 140, 100)],
    }
    checks = {c["target"]: c["met"] for c in check_targets(results)}
    assert checks["log-metric @32: rendered throughput >= stock"] is True
    assert checks["log-metric @32: p95 < 500 ms"] is True
    assert checks["log-metric @64: no errors"] is False


def test_every_operation_succeeds_against_the_real_server(platform: LocalPlatform, monkeypatch) -> None:
    """Each benchmark operation, as a non-admin user with an EDIT grant, on the local platform."""
    env = platform.client_env()
    admin = Admin(env["MLFLOW_TRACKING_URI"], (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]))
    suffix = uuid.uuid4().hex[:6]
    training = admin.experiment(f"/test/bench-{suffix}/training")
    search = admin.experiment(f"/test/bench-{suffix}/search")
    ensure_model(admin, f"bench-model-{suffix}", training)
    # Explicit grants: the local platform declares teams, so nothing is readable by default.
    reads = (("experiment", search), ("registered_model", f"bench-model-{suffix}"))
    user = create_client_user(admin, training, reads=reads)
    runs = fresh_training_runs_sql(platform.database_uri(), training, 2, user[0])
    seeded = len(TEAMS) * SEARCH_PAGE  # a full page of the filtered team
    seed_search_runs_sql(platform.database_uri(), search, seeded)
    fixture = Fixture(training, runs, search, f"bench-model-{suffix}")

    async def each():
        return [
            await run_level(op, 2, 0.3, base_url=env["MLFLOW_TRACKING_URI"], auth=user) for op in operations(fixture)
        ]

    for result in asyncio.run(each()):
        assert result.error_count == 0, (result.operation, dict(result.errors))
        assert result.ok > 0, result.operation

    # What the writes did is visible through the API: metrics, params, tags and the artifact.
    run = admin.call("GET", "/api/2.0/mlflow/runs/get", params={"run_id": runs[0]})["run"]["data"]
    assert {m["key"] for m in run["metrics"]} >= {"loss", "train/metric_0"}
    assert any(p["key"].startswith("hp_") for p in run["params"])
    listed = admin.call(
        "GET", "/api/2.0/mlflow-artifacts/artifacts", params={"path": f"{training}/{runs[0]}/artifacts/bench"}
    )
    assert listed.get("files"), "the artifact round trip left no file behind"
    # The OTLP exports became traces of SPANS_PER_EXPORT spans in the training experiment.
    import mlflow

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    traces = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"]).search_traces(locations=[training], max_results=5)
    assert traces and len(traces[0].data.spans) == SPANS_PER_EXPORT


def test_rounds_alternate_the_order_of_the_variants() -> None:
    """A later variant runs on a bigger database: alternating A B, B A keeps that from favouring one."""
    from benchmarks.tracking_load import build_parser, variant_plans

    args = build_parser().parse_args(["--variants", "baseline", "rendered", "--rounds", "3"])
    names = [name for name, _, _ in variant_plans(args)]
    assert names == ["baseline", "rendered", "rendered #2", "baseline #2", "baseline #3", "rendered #3"]


def test_the_baseline_variant_needs_a_checkout_with_its_venv(tmp_path, capsys) -> None:
    from benchmarks.tracking_load import main

    for argv in (
        ["--variants", "baseline", "rendered"],
        ["--variants", "workspaces_baseline", "workspaces"],
        ["--variants", "rendered", "--baseline", str(tmp_path)],
    ):
        with pytest.raises(SystemExit):
            main(argv)
        assert "baseline" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--variants", "baseline", "rendered", "--baseline", str(tmp_path)])
    assert "no .venv/bin/mlflow there" in capsys.readouterr().err
