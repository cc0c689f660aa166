"""How long `cleanup-runs` takes over N finished runs on the local platform (default 10,000).

    .venv/bin/python benchmarks/cleanup_runs.py [--runs 10000] [--workers 8]

Starts a throwaway local platform on free ports, seeds N old finished runs with MLflow's own SQL
store (plus a few kept and registered ones), then times the dry run and the real deletion through
the tracking server, exactly as on-call would run it. Prints the figures; changes nothing else.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import RunStatus
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from mlflow_platform.local.platform import LocalPlatform, Ports
from mlflow_platform.runbooks.runs import cleanup_runs

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        platform = LocalPlatform(state_dir=Path(tmp) / "state", stack_file=ROOT / "stacks" / "local.yaml")
        platform.up(Ports.free(), log=lambda _: None)
        try:
            env = platform.client_env()
            import os

            os.environ.update({k: v for k, v in env.items() if k.startswith("MLFLOW_TRACKING_")})
            client = MlflowClient(env["MLFLOW_TRACKING_URI"])
            name = "/platform/benchmark/cleanup"
            experiment = client.create_experiment(name)
            store = SqlAlchemyStore(platform.database_uri(), "mlflow-artifacts:/")
            ended = int((time.time() - 120 * 86400) * 1000)
            started = time.perf_counter()
            run_ids = []
            for _ in range(args.runs):
                run = store.create_run(experiment, "bench", ended - 60_000, [], "seeded")
                store.update_run_info(run.info.run_id, RunStatus.FINISHED, ended, None)
                run_ids.append(run.info.run_id)
            store.engine.dispose()
            seeded = time.perf_counter() - started
            for run_id in run_ids[:10]:
                client.set_tag(run_id, "keep", "true")

            started = time.perf_counter()
            dry = cleanup_runs(client, older_than_days=90, experiment_names=[name])
            dry_seconds = time.perf_counter() - started
            started = time.perf_counter()
            done = cleanup_runs(
                client, older_than_days=90, experiment_names=[name], dry_run=False, workers=args.workers
            )
            real_seconds = time.perf_counter() - started
        finally:
            platform.down(purge=True, log=lambda _: None)

    print(f"runs seeded            {args.runs:>8}  ({seeded:.1f} s through MLflow's SQL store)")
    print(
        f"dry run: examined      {dry.examined:>8}  in {dry_seconds:6.1f} s  ({dry.examined / dry_seconds:,.0f} runs/s)"
    )
    print(f"         would delete  {len(dry.selected):>8}  spared {dry.spared}")
    print(
        f"execute: deleted       {done.changed:>8}  in {real_seconds:6.1f} s  "
        f"({done.changed / real_seconds:,.0f} runs/s, "
        f"{args.workers} parallel requests, basic-auth on)"
    )


if __name__ == "__main__":
    main()
