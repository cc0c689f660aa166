"""How long a newer MLflow's schema migrations take on a large tracking database: the part of an
upgrade's downtime that grows with the data (the writers are stopped meanwhile).

    python -m venv /tmp/next && /tmp/next/bin/pip install mlflow==<next> 'psycopg[binary]'
    .venv/bin/python -m benchmarks.migration_time --state /tmp/mlflow-platform-scale --mlflow /tmp/next/bin/mlflow

It runs the newer release's ``mlflow db upgrade`` on data_scale's database (``--state``), then
once more with nothing left to migrate: the difference is the migrations, without the CLI's
start-up. The database is left at the newer schema, so this release's server no longer starts on
it: delete the state afterwards (the next data_scale run builds it again).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from benchmarks.bench_report import write_report

ROOT = Path(__file__).resolve().parent.parent


def upgrade(mlflow: Path, uri: str) -> float:
    started = time.perf_counter()
    result = subprocess.run([str(mlflow), "db", "upgrade", uri], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"mlflow db upgrade failed:\n{result.stderr[-2000:]}")
    return time.perf_counter() - started


def measure(state: Path, mlflow: Path) -> dict:
    from mlflow_platform.local.platform import open_platform

    platform = open_platform(state)
    postgres = platform._postgres(platform.state.ports)  # the database alone: no server reads it meanwhile
    postgres.start()
    try:
        uri = platform.database_uri()

        def facts() -> dict:
            with postgres.connect("mlflow") as conn:
                return {
                    "revision": conn.execute("SELECT version_num FROM alembic_version").fetchone()[0],
                    "runs": conn.execute("SELECT count(*) FROM runs").fetchone()[0],
                    "metric_rows": conn.execute("SELECT count(*) FROM metrics").fetchone()[0],
                    "database_bytes": conn.execute("SELECT pg_database_size('mlflow')").fetchone()[0],
                }

        before = facts()
        with_migrations = upgrade(mlflow, uri)
        nothing_left = upgrade(mlflow, uri)
        after = facts()
    finally:
        postgres.stop()
    version = subprocess.run([str(mlflow), "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return {
        "mlflow": version,
        "before": before,
        "after": after,
        "upgrade_s": round(with_migrations, 2),
        "noop_upgrade_s": round(nothing_left, 2),
        "migrations_s": round(with_migrations - nothing_left, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, default=Path("/tmp/mlflow-platform-scale"), help="data_scale's state")
    parser.add_argument("--mlflow", type=Path, required=True, help="the newer release's mlflow executable")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "migration_time.json")
    args = parser.parse_args(argv)
    report = measure(args.state / "state", args.mlflow)
    print(json.dumps(report, indent=2))
    write_report(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
