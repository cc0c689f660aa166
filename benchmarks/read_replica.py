"""The read replica at a million runs: search and UI throughput at 8 and 32 clients with the
server reading the primary, and reading a streaming replica, side by side in one run.

    make bench-replica       # reuses (or builds) the data-scale database in --state
    .venv/bin/python -m benchmarks.read_replica --runs 100000 --state /tmp/scale-100k

The database is data_scale's (built once per ``--state``), tuned as a deploy tunes it (``db
tune`` and the parameter group's settings for an 8 GiB class), then cloned into a hot standby
with ``pg_basebackup`` (timed). The two variants are the same rendered server with and without
``database.readReplica``, run one at a time and interleaved over ``--rounds``; both run with
basic-auth on, as the admin.

Read the ratio for what it is: here the replica shares the primary's two cores and page cache,
so it adds no capacity; it shows what routing costs and that nothing breaks under load. In AWS
the replica is another instance with cores and memory of its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.bench_report import write_report
from benchmarks.bench_servers import bench_stack
from benchmarks.data_scale import (
    ScaleBench,
    build,
    configure_postgres,
    experiment_ids,
    operations,
    printed_markdown,
)
from benchmarks.loadgen import LevelResult, run_level
from benchmarks.scale_seed import Size, database_size
from mlflow_platform.replica_reads import READ_REPLICA_URI_ENV

ROOT = Path(__file__).resolve().parent.parent
console = Console()
#: Searches and pages (what the replica serves); data_scale measures the rest.
DEFAULT_OPERATIONS = ("ui-experiment-page", "param-filter", "metric-filter", "registry-search")
VARIANTS = ("primary", "replica")


class ReplicaBench(ScaleBench):
    def use_replica(self) -> float:
        """Turn ``database.readReplica`` on for this platform and start it (the first start clones
        the whole cluster: returns the seconds that took)."""
        from mlflow_platform.local.platform import LocalPlatform

        bench_stack(self.work, {}, {"maxConnections": 100, "readReplica": {}})
        self.platform = LocalPlatform(self.platform.state_dir, self.work / "bench.yaml")
        started = time.perf_counter()
        self.platform.up(self.ports, log=console.print)
        return round(time.perf_counter() - started, 1)


def measure(bench: ReplicaBench, variant: str, names: list[str], clients: list[int], duration: float, warmup: float):
    import asyncio

    from mlflow_platform.local.processes import free_port

    config = bench.config
    if variant == "primary":
        config = config.model_copy(update={"database": config.database.model_copy(update={"read_replica": None})})
    server = bench.rendered(free_port(), config=config, key=variant, label=variant)
    assert (READ_REPLICA_URI_ENV in server.env) == (variant == "replica")
    pid = bench.launch(server)
    base_url = f"http://127.0.0.1:{server.argv[server.argv.index('--port') + 1]}"
    results: list[LevelResult] = []
    try:
        for op in [o for o in operations(experiment_ids(bench)) if o.name in names]:

            def level(n: int, seconds: float, op=op) -> LevelResult:
                return asyncio.run(
                    run_level(op, n, seconds, base_url=base_url, auth=bench.admin_auth(), request_timeout_s=300.0)
                )

            if warmup > 0:
                level(max(clients), warmup)
            for n in clients:
                result = level(n, duration)
                console.print(
                    f"  {variant:<8} {op.name:<20} {n:>2} clients  p95 {result.percentile(95) or 0:>7.0f} ms"
                    f"  {result.throughput:6.1f}/s" + (f"  errors {dict(result.errors)}" if result.errors else "")
                )
                results.append(result)
    finally:
        bench.halt(pid)
    return [r.as_dict() for r in results]


def drop_history(bench: ReplicaBench, size: Size) -> dict:
    """Empty ``metrics`` (every point of every history); ``latest_metrics``, which metric filters
    and ordering read, stays. The state's data set is no longer data_scale's: its marker moves to
    ``history-dropped.json`` (this benchmark reuses it, data_scale builds afresh)."""
    dropped = bench.work / "history-dropped.json"
    if dropped.exists() and json.loads(dropped.read_text())["size"] == size.as_dict():
        return json.loads(dropped.read_text())
    record = build(bench, size)
    with bench.connect() as conn:
        conn.execute("TRUNCATE metrics")
    dropped.write_text(json.dumps(record, indent=2))
    bench.marker.unlink(missing_ok=True)
    console.print("emptied the metric history table (--drop-history)")
    return record


def replica_reads(bench: ReplicaBench) -> dict:
    """What the replica answered during the run: its statements, from its pg_stat_statements."""
    with bench.platform.replica(bench.ports).connect("mlflow") as conn:
        calls = conn.execute("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements").fetchone()[0]
    return {"replica_statements": int(calls)}


def summary(report: dict) -> Table:
    table = Table(title="searches and pages: primary only vs with a read replica (median of rounds)")
    for column in ("operation", "clients", "primary p95, req/s", "replica p95, req/s", "throughput ratio"):
        table.add_column(column)
    for row in rows(report):
        table.add_row(*row)
    return table


def rows(report: dict) -> list[tuple[str, ...]]:
    import statistics

    grouped: dict[tuple[str, int, str], list[dict]] = {}
    for round_ in report["rounds"]:
        for variant in VARIANTS:
            for level in round_[variant]:
                grouped.setdefault((level["operation"], level["clients"], variant), []).append(level)
    out = []
    for op, clients in dict.fromkeys((k[0], k[1]) for k in grouped):
        cells = []
        rates = []
        for variant in VARIANTS:
            levels = grouped[(op, clients, variant)]
            p95 = statistics.median(level["p95_ms"] or 0 for level in levels)
            rate = statistics.median(level["throughput_per_s"] for level in levels)
            rates.append(rate)
            errors = sum(level["errors"] for level in levels)
            cells.append(f"{p95:,.0f} ms, {rate:.1f}/s" + (f" ({errors} errors)" if errors else ""))
        out.append((op, str(clients), *cells, f"{rates[1] / rates[0]:.2f}×" if rates[0] else "-"))
    return out


def markdown(report: dict) -> str:
    lines = [
        "| operation | clients | primary only: p95, req/s | with the replica: p95, req/s | throughput ratio |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {' | '.join(row)} |" for row in rows(report)]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    size = Size()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, default=Path("/tmp/mlflow-platform-scale"), help="data_scale's state")
    parser.add_argument("--runs", type=int, default=size.runs)
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--operations", nargs="+", default=list(DEFAULT_OPERATIONS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument(
        "--drop-history",
        action="store_true",
        help="empty the metric history table first (none of these searches reads it) so that the replica's "
        "copy fits on the disk; the next data_scale run rebuilds the data set",
    )
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "read_replica.json")
    parser.add_argument("--markdown", type=Path, metavar="JSON", help="print a report's table, run nothing")
    return parser


def main(argv: list[str] | None = None) -> int:
    from mlflow_platform.database.tuning import apply_tuning

    args = build_parser().parse_args(argv)
    if printed_markdown(args, markdown):
        return 0
    size = dataclasses.replace(Size(), runs=args.runs)
    args.state.mkdir(parents=True, exist_ok=True)
    bench = ReplicaBench(args.state)
    bench.start()
    report: dict = {"machine": {"cores": os.cpu_count()}, "clients": args.clients, "rounds": []}
    try:
        report["build"] = drop_history(bench, size) if args.drop_history else build(bench, size)
        report["history_dropped"] = args.drop_history
        with bench.connect() as conn:
            apply_tuning(conn, log=console.print)
            conn.execute("ANALYZE")
            report["size"] = database_size(conn)
        report["settings"] = configure_postgres(bench, 8, tuned=True, explain_ms=None)  # before the clone: copied
        report["replica_start_s"] = bench.use_replica()
        bench.platform.stop_tracking(log=lambda _: None)  # the variants below are the only servers
        for i in range(args.rounds):
            console.print(f"[bold]round {i + 1} of {args.rounds}[/]")
            order = VARIANTS if i % 2 == 0 else tuple(reversed(VARIANTS))
            report["rounds"].append(
                {v: measure(bench, v, args.operations, args.clients, args.duration, args.warmup) for v in order}
            )
        report.update(replica_reads(bench))
    finally:
        bench.platform.down(log=lambda _: None)
    console.print(summary(report))
    write_report(args.json, report)
    console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
