"""PostgreSQL's own ceiling for metrics-shaped writes (pgbench), beside which the server's figures are read."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

from benchmarks.bench_servers import LocalBench
from mlflow_platform.local.postgres import bin_dir

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
