"""The local artifact store's figures: start-up time, disk bytes per artifact byte, and upload /
download MB/s for one large artifact through the MLflow proxy.

    .venv/bin/python -m benchmarks.artifact_store [--megabytes 100]

Starts a throwaway local platform on free ports, times its first `up` and a restart, logs one
artifact with `MlflowClient.log_artifact` and downloads it again (sha256 compared), and reads the
SeaweedFS data directory's size before and after. Prints the figures; changes nothing else.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.fault_drills import QUIET, client_for, random_file, sha256
from mlflow_platform.local.platform import LocalPlatform, Ports, packaged_local_stack


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def timed(action) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def measure(work: Path, megabytes: int) -> dict[str, float]:
    platform = LocalPlatform(work / "state", packaged_local_stack())
    figures = {"first up (s)": timed(lambda: platform.up(Ports.free(), **QUIET))}
    try:
        platform.down(**QUIET)
        figures["up from stopped (s)"] = timed(lambda: platform.up(**QUIET))
        client = client_for(platform)
        run = client.create_run(client.create_experiment("/bench/artifact-store"))
        source = random_file(work / "artifact.bin", megabytes)
        data = platform.state_dir / "s3" / "data"
        before = disk_bytes(data)
        upload = timed(lambda: client.log_artifact(run.info.run_id, str(source)))
        after = disk_bytes(data)
        target = work / "back"
        download = timed(lambda: client.download_artifacts(run.info.run_id, source.name, str(target)))
        assert sha256(target / source.name) == sha256(source), "downloaded artifact differs"
        size = source.stat().st_size
        figures.update(
            {
                f"upload {megabytes} MB through the proxy (MB/s)": megabytes / upload,
                f"download {megabytes} MB through the proxy (MB/s)": megabytes / download,
                "disk bytes per artifact byte": (after - before) / size,
            }
        )
    finally:
        platform.down(purge=True, **QUIET)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures = measure(Path(tmp), args.megabytes)
    for name, value in figures.items():
        print(f"{name:<48} {value:8.2f}")


if __name__ == "__main__":
    main()
