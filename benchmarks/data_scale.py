"""MLflow at the size its users live at: what a million runs and a hundred million metric rows
feel like through the rendered server, with basic-auth on, before and after the platform's
database tuning, side by side in one run.

    make bench-scale                                   # 1M runs, 100M metric rows (~1.5 h here, ~40 GB in --state)
    .venv/bin/python -m benchmarks.data_scale --runs 100000 --steps 10 --state /tmp/scale-100k

The database is built once per ``--state`` directory and reused (a build at 1M runs takes about
12 minutes here) until the runbooks phase changes it. Each figure is printed with the database's size, and
the whole report is written as JSON (``--json``) for docs/benchmarks.md and docs/sizing.md.

Phases:
1. ``mlflow`` : MLflow's own schema, PostgreSQL configured like RDS's defaults for ``--memory-gib``;
2. ``tuned``  : the same data after ``db tune`` (the platform's indexes, created CONCURRENTLY,
   per-table autovacuum and the parameters the stack puts in the RDS parameter group);
3. the runbooks at that size: ``cleanup-runs`` over the stale experiment, ``gc`` of the deleted
   runs (time and peak memory), ``pg_dump`` and restore (optional, ``--backup``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table

from benchmarks.bench_report import write_report
from benchmarks.bench_servers import LocalBench
from benchmarks.loadgen import Client, LevelResult, Operation, run_level
from benchmarks.scale_seed import BIG_EXPERIMENT, LONG_RUN, STALE_EXPERIMENT, Size, database_size, seed

ROOT = Path(__file__).resolve().parent.parent
console = Console()
SEARCH = "/api/2.0/mlflow/runs/search"
UI_SEARCH = "/ajax-api/2.0/mlflow/runs/search"


# -- the platform and its data ----------------------------------------------------------------------
class ScaleBench(LocalBench):
    """The throwaway platform, kept in ``state`` so the (slow) build survives between runs."""

    def __init__(self, state: Path):
        super().__init__(state, {}, {"maxConnections": 100})
        self.marker = state / "seeded.json"

    def start(self) -> None:
        saved = self.platform.state.ports
        self.ports = saved if (self.platform.state_dir / "state.json").exists() and saved.postgres else self.ports
        self.platform.up(self.ports, log=lambda _: None)

    def restart_postgres(self) -> None:
        self.platform.down(log=lambda _: None)
        self.platform.up(self.ports, log=lambda _: None)

    def connect(self) -> psycopg.Connection:
        from mlflow_platform.database.connection import connect

        return connect(self.platform.database_uri())

    def seeded(self, size: Size) -> bool:
        return self.marker.exists() and json.loads(self.marker.read_text()).get("size") == size.as_dict()


def build(bench: ScaleBench, size: Size) -> dict:
    if bench.seeded(size):
        console.print(f"reusing the database in {bench.work} ({size.runs:,} runs)")
        return json.loads(bench.marker.read_text())
    with bench.connect() as conn:
        if conn.execute("SELECT count(*) FROM runs").fetchone()[0]:
            raise SystemExit(f"{bench.work} holds another data set (or one the runbooks changed): delete it first")
        console.print(f"building {size.runs:,} runs and {size.metric_rows:,} metric rows in {bench.work}")
        started = time.perf_counter()
        timings = seed(conn, size, log=console.print)
        sizes = database_size(conn)
    record = {"size": size.as_dict(), "build_s": round(time.perf_counter() - started, 1), "phases": timings, **sizes}
    bench.marker.write_text(json.dumps(record, indent=2))
    return record


def configure_postgres(bench: ScaleBench, memory_gib: int, *, tuned: bool, explain_ms: int | None) -> dict:
    """PostgreSQL as RDS configures it for a class with ``memory_gib`` (its formulas for
    shared_buffers, effective_cache_size and maintenance_work_mem), plus, when ``tuned``, the
    parameters the stack adds (``database.parameters``); restarts it. auto_explain, with
    ``explain_ms``, logs the plan of every MLflow query slower than that."""
    from mlflow_platform.database.parameters import tuned_parameters

    mib = memory_gib * 1024
    settings = {
        "shared_buffers": f"{mib // 4}MB",
        "effective_cache_size": f"{mib * 3 // 4}MB",
        "maintenance_work_mem": f"{max(64, mib * 1024 * 1024 // 63963136)}MB",
        "work_mem": "4MB",
        "random_page_cost": "4",
        "jit": "on",
        "track_io_timing": "off",
    }
    if tuned:
        settings.update(tuned_parameters())
    if explain_ms is not None:
        settings.update(
            {
                "session_preload_libraries": "auto_explain",
                "auto_explain.log_min_duration": str(explain_ms),
                "auto_explain.log_analyze": "on",
                "auto_explain.log_buffers": "on",
            }
        )
    with bench.platform._postgres(bench.ports).connect() as admin:  # ALTER SYSTEM: the superuser
        admin.autocommit = True
        for name, value in settings.items():
            admin.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
    bench.restart_postgres()
    return settings


def verify(bench: ScaleBench) -> dict:
    """Read what the build made through MLflow's own client (a row it cannot read fails here)."""
    from mlflow import MlflowClient

    os.environ.update({k: v for k, v in bench.platform.client_env().items() if k.startswith("MLFLOW_TRACKING_")})
    client = MlflowClient(bench.platform.tracking_uri())
    big = client.get_experiment_by_name(BIG_EXPERIMENT)
    page = client.search_runs([big.experiment_id], max_results=50, order_by=["attributes.start_time DESC"])
    run = client.get_run(page[0].info.run_id)
    problems = []
    if len(page) != 50 or len(run.data.params) != 5 or len(run.data.metrics) != 5 or "team" not in run.data.tags:
        problems.append(f"sample run {run.info.run_id} reads back as {run.data}")
    history = client.get_metric_history(LONG_RUN, "loss")  # MLflow's client pages on its own
    champion = client.get_model_version_by_alias("scale-model-1", "champion")
    if not champion.version:
        problems.append("scale-model-1@champion does not resolve")
    if problems:
        raise SystemExit("the built database does not read back through MLflow: " + "; ".join(problems))
    return {"long_history_points": len(history), "sample_run": run.info.run_id}


# -- what people feel -------------------------------------------------------------------------------
@dataclass
class Ids:
    big: str
    twenty: list[str]


def experiment_ids(bench: ScaleBench) -> Ids:
    with bench.connect() as conn:
        big = conn.execute("SELECT experiment_id FROM experiments WHERE name = %s", (BIG_EXPERIMENT,)).fetchone()[0]
        rows = conn.execute(
            "SELECT experiment_id FROM experiments WHERE name LIKE '/platform/scale/exp-%' ORDER BY 1 LIMIT 20"
        ).fetchall()
    return Ids(str(big), [str(r[0]) for r in rows])


def _search(name: str, body: dict, path: str = SEARCH) -> Operation:
    async def action(client: Client) -> None:
        await client.call("POST", path, json=body)

    return Operation(name, False, action)


def _get(name: str, path: str, params: dict) -> Operation:
    async def action(client: Client) -> None:
        await client.call("GET", path, params=params)

    return Operation(name, False, action)


def operations(ids: Ids) -> list[Operation]:
    big = [ids.big]
    history = {"run_id": LONG_RUN, "metric_key": "loss"}
    return [
        _search(
            "ui-experiment-page",
            {"experiment_ids": big, "max_results": 100, "order_by": ["attributes.start_time DESC"]},
            UI_SEARCH,
        ),
        _search("tag-filter", {"experiment_ids": big, "filter": "tags.team = 'nlp'", "max_results": 100}),
        _search("param-filter", {"experiment_ids": big, "filter": "params.hp_1 = '42'", "max_results": 100}),
        _search("metric-filter", {"experiment_ids": big, "filter": "metrics.val_0 > 0.9", "max_results": 100}),
        _search(
            "metric-filter-ordered",
            {
                "experiment_ids": big,
                "filter": "metrics.val_0 > 0.9",
                "order_by": ["metrics.val_0 DESC"],
                "max_results": 100,
            },
        ),
        _search(
            "run-name-lookup",
            {"experiment_ids": big, "filter": "tags.mlflow.runName = 'run-123457'", "max_results": 100},
        ),
        _search("cross-experiment", {"experiment_ids": ids.twenty, "filter": "tags.team = 'nlp'", "max_results": 100}),
        _get(
            "ui-sampled-chart",
            "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval",
            {"run_ids": LONG_RUN, "metric_key": "loss", "max_results": 320},
        ),
        _get("history-first-page", "/api/2.0/mlflow/metrics/get-history", {**history, "max_results": 25000}),
        _get(
            "registry-search",
            "/api/2.0/mlflow/registered-models/search",
            {"filter": "name LIKE 'scale-model-1%'", "max_results": 100},
        ),
        _get("versions-search", "/api/2.0/mlflow/model-versions/search", {"filter": "name = 'scale-model-7'"}),
    ]


def measure(bench: ScaleBench, ids: Ids, clients: list[int], duration: float, warmup: float) -> list[LevelResult]:
    """Each operation first runs ``warmup`` seconds unmeasured at the highest level: a phase that
    follows an index build (which reads the whole metrics table through the cache) would otherwise
    be measured on a cold cache, and the one before it on a warm one."""
    results = []

    def level_of(op: Operation, level: int, seconds: float) -> LevelResult:
        return asyncio.run(
            run_level(
                op,
                level,
                seconds,
                base_url=bench.platform.tracking_uri(),
                auth=bench.admin_auth(),
                request_timeout_s=float(bench.config.server.timeout_seconds),
                tail_s=float(bench.config.server.timeout_seconds),
            )
        )

    for op in operations(ids):
        if warmup > 0:
            level_of(op, max(clients), warmup)
        for level in clients:
            result = level_of(op, level, duration)
            p95 = result.percentile(95)
            console.print(
                f"  {op.name:<22} {level:>2} clients  p95 {p95 or 0:>8.0f} ms  {result.throughput:6.1f}/s"
                + (f"  errors {dict(result.errors)}" if result.errors else "")
            )
            results.append(result)
    return results


def full_history(bench: ScaleBench) -> dict:
    """One client asking for the whole 1M-point history in one request, as a client that does not
    page would: does it answer within the worker timeout, or is it paged by the server?"""
    import requests

    started = time.perf_counter()
    response = requests.get(
        bench.platform.tracking_uri() + "/api/2.0/mlflow/metrics/get-history",
        params={"run_id": LONG_RUN, "metric_key": "loss"},
        auth=bench.admin_auth(),
        timeout=bench.config.server.timeout_seconds + 30,
    )
    body = response.json() if response.ok else {}
    return {
        "status": response.status_code,
        "seconds": round(time.perf_counter() - started, 2),
        "points": len(body.get("metrics", [])),
        "next_page_token": bool(body.get("next_page_token")),
        "bytes": len(response.content),
    }


def client_history(bench: ScaleBench) -> dict:
    """MLflow's client reading the whole 1M-point history (it pages itself)."""
    from mlflow import MlflowClient

    started = time.perf_counter()
    points = len(MlflowClient(bench.platform.tracking_uri()).get_metric_history(LONG_RUN, "loss"))
    return {"points": points, "seconds": round(time.perf_counter() - started, 2)}


# -- the runbooks at this size ----------------------------------------------------------------------
GC_SCRIPT = """
import json, resource, sys
from mlflow_platform.runbooks.gc import gc
report = gc(backend_store_uri=sys.argv[1], tracking_uri=sys.argv[2], older_than="30d")
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"purged": len(report.candidates), "peak_kib": peak_kib}))
"""


def _gc_in_a_fresh_interpreter(bench: ScaleBench) -> tuple[int, int]:
    """`gc` with its peak memory: the largest `mlflow gc` process it ran, from the rusage of a fresh
    interpreter's children (this one's also hold every server an earlier phase stopped)."""
    argv = [sys.executable, "-c", GC_SCRIPT, bench.platform.database_uri(), bench.platform.tracking_uri()]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return found["purged"], found["peak_kib"]


def runbooks(bench: ScaleBench, backup: bool) -> dict:
    from mlflow import MlflowClient

    from mlflow_platform.runbooks.runs import cleanup_runs

    client = MlflowClient(bench.platform.tracking_uri())
    out: dict[str, dict] = {}
    started = time.perf_counter()
    done = cleanup_runs(client, older_than_days=90, experiment_names=[STALE_EXPERIMENT], dry_run=False, workers=8)
    out["cleanup_runs"] = {"deleted": done.changed, "seconds": round(time.perf_counter() - started, 1)}
    console.print(f"  cleanup-runs   {done.changed:,} runs in {out['cleanup_runs']['seconds']} s")
    started, started_at = time.perf_counter(), _db_now(bench)
    purged, peak_kib = _gc_in_a_fresh_interpreter(bench)
    out["gc"] = {
        "purged_runs": purged,
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mib": round(peak_kib / 1024, 1),
    }
    console.print(f"  gc             {out['gc']}")
    out["autovacuum_after_gc"] = autovacuum_after(bench, started_at)
    console.print(f"  autovacuum     {out['autovacuum_after_gc']}")
    if backup:
        out["backup"] = backup_restore(bench)
    return out


HOT = ["metrics", "latest_metrics", "params", "tags", "runs"]


def _db_now(bench: ScaleBench):
    with bench.connect() as conn:
        return conn.execute("SELECT now()").fetchone()[0]


def autovacuum_after(bench: ScaleBench, since, limit_s: float = 900) -> dict:
    """Whether autovacuum (at the thresholds `db tune` sets) cleans up after gc by itself, and how
    soon: the dead rows gc left in each hot table, and seconds until its autovacuum finished."""
    started, found = time.monotonic(), {}
    with bench.connect() as conn:
        while time.monotonic() - started < limit_s:
            rows = conn.execute(
                "SELECT relname, n_dead_tup, last_autovacuum FROM pg_stat_user_tables WHERE relname = ANY(%s)", (HOT,)
            ).fetchall()
            for name, dead, last in rows:
                entry = found.setdefault(name, {"dead_rows_after_gc": dead, "vacuumed_after_s": None})
                if last and last > since and entry["vacuumed_after_s"] is None:
                    entry["vacuumed_after_s"] = round(time.monotonic() - started)
            if all(e["vacuumed_after_s"] is not None or e["dead_rows_after_gc"] == 0 for e in found.values()):
                break
            time.sleep(10)
    return found


def backup_restore(bench: ScaleBench) -> dict:
    """pg_dump, then the restore `db restore` does (drop, re-create, pg_restore) over the same
    database: a second copy would not fit beside the first on most disks at this size."""
    from mlflow_platform.database.backup import backup_to_file, restore_database

    uri = bench.platform.database_uri()
    bench.platform.stop_tracking(log=lambda _: None)
    try:
        started = time.perf_counter()
        dump = backup_to_file(uri, bench.work / "backups")
        dumped = time.perf_counter() - started
        started = time.perf_counter()
        restore_database(uri, dump)
        restored = time.perf_counter() - started
        result = {"dump_s": round(dumped, 1), "restore_s": round(restored, 1), "dump_bytes": dump.stat().st_size}
        dump.unlink()
    finally:
        bench.platform.up(bench.ports, log=lambda _: None)
    console.print(f"  backup         {result}")
    return result


# -- the run ----------------------------------------------------------------------------------------
def phase(bench: ScaleBench, name: str, args) -> dict:
    console.print(f"[bold]{name}[/]")
    ids = experiment_ids(bench)
    levels = measure(bench, ids, args.clients, args.duration, args.warmup)
    return {
        "levels": [r.as_dict() for r in levels],
        "full_history_one_request": full_history(bench),
        "full_history_mlflow_client": client_history(bench),
    }


def slowest_statements(bench: ScaleBench) -> list[dict]:
    """`db report`'s top statements after the untuned phase: MLflow's queries that cost the most."""
    from dataclasses import asdict

    from mlflow_platform.database.report import database_report

    with bench.connect() as conn:
        report = database_report(conn, limit=8, record=False)
    with bench.platform._postgres(bench.ports).connect("mlflow") as admin:  # the tuned phase starts afresh
        admin.execute("SELECT pg_stat_statements_reset()")
    return [asdict(s) for s in report.slowest_total]


def summary(report: dict) -> Table:
    table = Table("operation", "clients", "mlflow p95 ms", "tuned p95 ms", "ratio (mlflow/tuned)")
    tuned = {(r["operation"], r["clients"]): r for r in report["tuned"]["levels"]}
    for before in report["mlflow"]["levels"]:
        after = tuned.get((before["operation"], before["clients"]))
        if not after:
            continue
        ratio = before["p95_ms"] / after["p95_ms"] if after["p95_ms"] else 0
        table.add_row(
            before["operation"],
            str(before["clients"]),
            f"{before['p95_ms']:.0f}",
            f"{after['p95_ms']:.0f}",
            f"{ratio:.2f}",
        )
    return table


def markdown(report: dict) -> str:
    """The report as docs/benchmarks.md's tables."""
    size, built = report["size"], report["build"]["size"]
    lines = [
        f"{built['runs']:,} runs, {size['metric_rows_estimate']:,} metric rows, database "
        f"{size['database_bytes'] / 1e9:.1f} GB after `db tune` (metrics with its indexes "
        f"{size['metrics_bytes'] / 1e9:.1f} GB); PostgreSQL sized like a {report['memory_gib']} GiB RDS class.",
        "",
        "| operation | clients | MLflow's schema: p95, req/s | after `db tune`: p95, req/s | p95 ratio |",
        "|---|---|---|---|---|",
    ]
    tuned = {(r["operation"], r["clients"]): r for r in report["tuned"]["levels"]}
    for before in report["mlflow"]["levels"]:
        after = tuned[(before["operation"], before["clients"])]
        errors = sum(r["errors"] for r in (before, after))
        lines.append(
            f"| {before['operation']} | {before['clients']} "
            f"| {before['p95_ms']:,.0f} ms, {before['throughput_per_s']}/s "
            f"| {after['p95_ms']:,.0f} ms, {after['throughput_per_s']}/s | {before['p95_ms'] / after['p95_ms']:.2f}× "
            + (f"(**{errors} errors**) |" if errors else "|")
        )
    for phase in ("mlflow", "tuned"):
        one, client = report[phase]["full_history_one_request"], report[phase]["full_history_mlflow_client"]
        lines.append(
            f"\nFull 1M-point history, {phase}: one request without paging answered {one['status']} in "
            f"{one['seconds']} s with {one['points']:,} points ({one['bytes'] / 1e6:.1f} MB"
            f"{', and a next_page_token' if one['next_page_token'] else ''}); MlflowClient.get_metric_history "
            f"read all {client['points']:,} in {client['seconds']} s."
        )
    if "runbooks" in report:
        rb = report["runbooks"]
        cleanup, gc = rb["cleanup_runs"], rb["gc"]
        lines += [
            "",
            f"- `cleanup-runs --execute`: {cleanup['deleted']:,} runs in {cleanup['seconds']} s "
            f"({cleanup['deleted'] / cleanup['seconds']:.0f} runs/s)",
            f"- `gc`: {gc['purged_runs']:,} runs in {gc['seconds']} s "
            f"({gc['purged_runs'] / gc['seconds']:.0f} runs/s), "
            + (
                f"peak memory of the largest `mlflow gc` process {gc['peak_rss_mib']} MiB "
                f"(4 run at once: at most {4 * gc['peak_rss_mib']:,.0f} MiB together)"
                if gc["peak_rss_mib"] is not None
                else "peak memory not measured (that run read it from its own children's rusage)"
            ),
        ]
        for table, entry in rb["autovacuum_after_gc"].items():
            lines.append(
                f"- autovacuum of `{table}` after gc: {entry['dead_rows_after_gc']:,} dead rows, "
                + (
                    f"vacuumed {entry['vacuumed_after_s']} s after gc ended"
                    if entry["vacuumed_after_s"] is not None
                    else "not vacuumed within the 15 minutes watched"
                )
            )
        if "backup" in rb:
            b = rb["backup"]
            lines.append(f"- pg_dump {b['dump_s']} s ({b['dump_bytes'] / 1e9:.1f} GB file), restore {b['restore_s']} s")
    return "\n".join(lines)


def printed_markdown(args: argparse.Namespace, render: Callable[[dict], str]) -> bool:
    """``--markdown JSON``: print that report's tables and run nothing (True). Otherwise a SIGTERM
    from here on ends the run through its ``finally`` (the platform stopped), and False."""
    if args.markdown:
        print(render(json.loads(args.markdown.read_text())))
        return True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return False


def build_parser() -> argparse.ArgumentParser:
    size = Size()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, default=Path("/tmp/mlflow-platform-scale"), help="kept between runs")
    parser.add_argument("--runs", type=int, default=size.runs)
    parser.add_argument("--steps", type=int, default=size.steps, help="history points per metric (5 per run)")
    parser.add_argument("--long-history", type=int, default=size.long_history)
    parser.add_argument("--deleted", type=int, default=size.deleted)
    parser.add_argument("--stale", type=int, default=size.stale)
    parser.add_argument("--models", type=int, default=size.models)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per operation and level")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds per operation first")
    parser.add_argument("--memory-gib", type=int, default=8, help="size PostgreSQL like an RDS class with this much")
    parser.add_argument("--skip-runbooks", action="store_true", help="measure searches only (keeps the data intact)")
    parser.add_argument("--backup", action="store_true", help="also time pg_dump and the restore")
    parser.add_argument("--explain-ms", type=int, help="log the plan of every query slower than this (auto_explain)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "data_scale.json")
    parser.add_argument(
        "--markdown", type=Path, metavar="JSON", help="print a report's tables for the docs, run nothing"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    from mlflow_platform.database.tuning import apply_tuning, remove_tuning

    args = build_parser().parse_args(argv)
    if printed_markdown(args, markdown):
        return 0
    size = Size(args.runs, args.steps, 200, 0.2, args.long_history, args.deleted, args.stale, args.models, 5)
    args.state.mkdir(parents=True, exist_ok=True)
    bench = ScaleBench(args.state)
    bench.start()
    report: dict = {"machine": {"cores": os.cpu_count()}, "memory_gib": args.memory_gib, "clients": args.clients}
    try:
        report["build"] = build(bench, size)
        with bench.connect() as conn:
            remove_tuning(conn)  # a reused database starts from MLflow's own schema too
            conn.execute("ANALYZE")
        report["settings_mlflow"] = configure_postgres(bench, args.memory_gib, tuned=False, explain_ms=args.explain_ms)
        report["verify"] = verify(bench)
        report["mlflow"] = phase(bench, "MLflow's schema, PostgreSQL as RDS configures it", args)
        report["slowest_statements"] = slowest_statements(bench)
        started = time.perf_counter()
        with bench.connect() as conn:
            report["tuning"] = apply_tuning(conn, log=console.print)
            conn.execute("ANALYZE")
        report["tuning_s"] = round(time.perf_counter() - started, 1)
        report["settings_tuned"] = configure_postgres(bench, args.memory_gib, tuned=True, explain_ms=args.explain_ms)
        report["tuned"] = phase(bench, "after `db tune` and the stack's parameters", args)
        with bench.connect() as conn:
            report["size"] = database_size(conn)
        if not args.skip_runbooks:
            bench.marker.unlink()  # the runbooks delete runs: the next run builds again
            report["runbooks"] = runbooks(bench, args.backup)
    finally:
        bench.platform.down(log=lambda _: None)
    console.print(summary(report))
    write_report(args.json, report)
    console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
