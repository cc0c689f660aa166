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
import datetime as dt
import json
import os
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
from rich.table import Table

from mlflow_platform.local.processes import free_port

from .bench_pgbench import pgbench_ceiling
from .bench_report import (
    check_gate,
    check_targets,
    console,
    machine,
    markdown_summary,
    progress_line,
    results_table,
    write_report,
)
from .bench_seeding import (
    SEARCH_RUNS,
    TRAINING_RUNS,
    Admin,
    create_client_user,
    ensure_model,
    fresh_training_runs_sql,
    seed_search_runs_api,
    seed_search_runs_sql,
    training_runs,
)
from .bench_servers import TUNING, LocalBench, _redact, candidate_config, parse_overrides
from .loadgen import LevelResult, Operation, process_group, run_level
from .tracking_ops import Fixture, operations

ROOT = Path(__file__).resolve().parent.parent
LEVELS = (1, 8, 32, 64)
SEARCH_TARGET_MAX_CLIENTS = 8


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


def variant_plans(args) -> list[tuple[str, dict | None, dict | None]]:
    """(name, server overrides, database overrides) per server to run, in order."""
    if args.tune is None:
        # Rounds interleave the variants and alternate their order (A B, B A, A B, ...): the database
        # grows under every variant, so one that always ran later would look slower for it.
        return [
            (key if r == 0 else f"{key} #{r + 1}", None, None)
            for r in range(args.rounds)
            for key in (args.variants if r % 2 == 0 else list(reversed(args.variants)))
        ]
    chosen = [plan for plan in TUNING if not args.tune or plan[0] in args.tune]
    # Rounds interleave the candidates (A B C A B C): drift in the machine over the
    # run then shows up as spread within a candidate, not as a difference between them.
    return [(name if r == 0 else f"{name} #{r + 1}", s_o, d_o) for r in range(args.rounds) for name, s_o, d_o in chosen]


def seed(bench: LocalBench, args) -> tuple[Fixture, tuple[str, str], Callable[[], None]]:
    """The data set every variant runs against, the non-admin client user, and a function that
    gives each level fresh training runs."""
    uri = bench.platform.tracking_uri(bench.ports)
    admin = Admin(uri, bench.admin_auth())
    training = admin.experiment("/platform/benchmark/training")
    search = admin.experiment("/platform/benchmark/search")
    ensure_model(admin, "bench-model", training)
    user = create_client_user(admin, training, reads=(("experiment", search), ("registered_model", "bench-model")))
    database_uri = bench.platform.database_uri()
    seconds = seed_search_runs_sql(database_uri, search, args.search_runs)
    console.print(
        f"seeded {args.search_runs:,} runs (tags, params, metrics) in {seconds:.1f} s; "
        f"model alias @champion; {TRAINING_RUNS} fresh training runs per level"
    )
    fixture = Fixture(training, [], search, "bench-model")

    def fresh_runs() -> None:
        fixture.run_ids[:] = fresh_training_runs_sql(database_uri, training, TRAINING_RUNS, user[0])

    return fixture, user, fresh_runs


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
        bench.baseline_dir = args.baseline
        console.print("starting the local platform (embedded PostgreSQL, S3 API) …")
        bench.start()
        try:
            fixture, user, fresh_runs = seed(bench, args)
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
            plans = variant_plans(args)
            for index, (name, s_over, d_over) in enumerate(plans):
                port = free_port()
                if s_over is not None:
                    config = candidate_config(
                        bench.work / f"tune-{index}", {**server_overrides, **s_over}, {**database_overrides, **d_over}
                    )
                    variant = bench.rendered(port, config=config, key=name, label=name)
                else:
                    variant = getattr(bench, name.split(" #")[0])(port)
                    variant.key = name
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


def report_pgbench(report: dict, results: dict[str, list[LevelResult]]) -> None:
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
    pg["rendered_best_log_batch_metrics_per_s"] = round(best)


def report_targets(results: dict[str, list[LevelResult]]) -> list[dict]:
    before = "baseline" if "baseline" in results else "previous"
    checks = check_targets(results) + check_gate(results, before=before)
    table = Table(title="Targets (rendered config, basic-auth on)")
    for col in ("target", "measured", "met"):
        table.add_column(col)
    for c in checks:
        verdict = "—" if c["met"] is None else "[green]yes[/green]" if c["met"] else "[red]NO[/red]"
        table.add_row(c["target"], c["measured"], verdict)
    console.print(table)
    return checks


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", help="benchmark this server instead of starting local variants")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["stock", "guide", "previous", "rendered", "uvicorn"],
        choices=["stock", "guide", "previous", "rendered", "uvicorn", "workspaces", "baseline", "workspaces_baseline"],
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="CHECKOUT",
        help="for the 'baseline' variant: another checkout with its own .venv (e.g. a git worktree of main); "
        "its code serves the same rendered config, and the gate compares 'rendered' with it",
    )
    parser.add_argument("--levels", nargs="+", type=int, default=list(LEVELS), help="concurrent clients")
    parser.add_argument(
        "--search-runs", type=int, default=SEARCH_RUNS, help="runs in the search experiment (the targets assume 10,000)"
    )
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per operation and level")
    parser.add_argument(
        "--operations",
        nargs="+",
        help="a subset of: log-batch log-metric artifact-put-get search-runs model-by-alias otlp-traces",
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
    parser.add_argument("--rounds", type=int, default=1, help="repeat the variants (or candidates), interleaved")
    parser.add_argument("--no-pgbench", action="store_true")
    parser.add_argument("--pgbench-seconds", type=int, default=5)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "tracking_load.json")
    parser.add_argument(
        "--markdown",
        type=Path,
        metavar="JSON",
        help="print a saved report's tables as Markdown (for docs/benchmarks.md) and exit",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
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
    if any(v.endswith("baseline") for v in args.variants) != (args.baseline is not None):
        parser.error("the 'baseline' variants and --baseline CHECKOUT go together")
    if args.baseline is not None and not (args.baseline / ".venv" / "bin" / "mlflow").exists():
        parser.error(f"--baseline {args.baseline}: no .venv/bin/mlflow there (run `make install` in it)")
    if args.tune is not None:
        args.levels = [32] if args.levels == list(LEVELS) else args.levels
        args.operations = args.operations or ["log-batch", "log-metric", "artifact-put-get", "model-by-alias"]
    ops_filter = set(args.operations) if args.operations else None
    started = time.monotonic()
    report = run_remote(args, ops_filter) if args.uri else run_local(args, ops_filter)
    results, labels = report.pop("_results"), report.pop("_labels")
    console.print(results_table(results, labels))
    if "pgbench" in report:
        report_pgbench(report, results)
    if not args.uri and args.tune is None and "rendered" in results:
        report["targets"] = report_targets(results)
    report["wall_s"] = round(time.monotonic() - started, 1)
    write_report(args.json, report)
    console.print(f"wrote {args.json} ({report['wall_s']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
