"""Fault drills for the local platform: kill a component under load, heal it, check every byte.

    .venv/bin/python -m benchmarks.fault_drills        (or `make drills`)

Starts a throwaway platform on free ports, runs each drill against it with the stock MLflow
client, and prints one row per drill: what was checked, the time `local up` took to heal, and
the longest a single client call stalled. The test suite runs the same functions and asserts
their outcomes (tests/test_fault_drills.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from mlflow import MlflowClient

from mlflow_platform.local.platform import LocalPlatform, Ports, packaged_local_stack

QUIET = {"log": lambda _line: None}


@dataclass
class DrillResult:
    name: str
    passed: bool
    checked: str
    heal_seconds: float | None = None
    longest_stall_seconds: float | None = None
    facts: dict = field(default_factory=dict)


def no_retries() -> None:
    """Client calls fail fast instead of retrying for minutes (MLflow's default is 7 retries)."""
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "30"


def client_for(platform: LocalPlatform) -> MlflowClient:
    for key, value in platform.client_env().items():
        if key.startswith("MLFLOW_TRACKING_"):
            os.environ[key] = value
    return MlflowClient(tracking_uri=platform.tracking_uri())


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def random_file(path: Path, megabytes: int) -> Path:
    with path.open("wb") as handle:
        for _ in range(megabytes):
            handle.write(os.urandom(1 << 20))
    return path


def heal(platform: LocalPlatform) -> float:
    started = time.monotonic()
    platform.up(**QUIET)
    return time.monotonic() - started


def _kill(pid: int | None) -> None:
    if pid:
        os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).wait(10)


def postgres_killed_while_logging(platform: LocalPlatform, *, calls: int = 400) -> DrillResult:
    """SIGKILL PostgreSQL a third of the way through a bounded log_metric loop; every point the
    client got an acknowledgement for must be in the database afterwards."""
    no_retries()
    client = client_for(platform)
    run = client.create_run(client.create_experiment(f"/drills/postgres/{time.time_ns()}"))
    acked, failures, stall = [], 0, 0.0
    pg_pid = platform._postgres(platform.state.ports, password=False).pid
    for step in range(calls):
        if step == calls // 3:
            _kill(pg_pid)
        began = time.monotonic()
        try:
            client.log_metric(run.info.run_id, "loss", float(step), step=step)
            acked.append(step)
        except Exception:
            failures += 1
        stall = max(stall, time.monotonic() - began)
    heal_seconds = heal(platform)
    stored = {m.step for m in client.get_metric_history(run.info.run_id, "loss")}
    lost = sorted(set(acked) - stored)
    return DrillResult(
        "postgres SIGKILL during 400 log_metric calls",
        not lost and failures > 0,
        f"{len(acked)} acknowledged, {len(lost)} lost, {failures} refused while down",
        heal_seconds,
        stall,
        {"lost": lost, "failures": failures, "acked": len(acked)},
    )


def s3_killed_during_upload(platform: LocalPlatform, work: Path, *, megabytes: int = 200) -> DrillResult:
    """SIGKILL SeaweedFS in the middle of a large log_artifact. The client gets an error, no
    partial object becomes visible, and everything uploaded before reads back identical."""
    no_retries()
    client = client_for(platform)
    run = client.create_run(client.create_experiment(f"/drills/s3-kill/{time.time_ns()}"))
    before = random_file(work / "before.bin", 4)
    client.log_artifact(run.info.run_id, str(before))
    big = random_file(work / "big.bin", megabytes)
    outcome: dict = {}

    def upload() -> None:
        began = time.monotonic()
        try:
            client.log_artifact(run.info.run_id, str(big))
            outcome["error"] = None
        except Exception as exc:
            outcome["error"] = type(exc).__name__
        outcome["stall"] = time.monotonic() - began

    worker = threading.Thread(target=upload)
    worker.start()
    time.sleep(0.3)  # the proxy is streaming the body into the object store by now (50 MB once finished sooner)
    _kill(platform.state.pids.get("s3"))
    worker.join(120)
    heal_seconds = heal(platform)
    listed = {f.path for f in client.list_artifacts(run.info.run_id)}
    restored = Path(client.download_artifacts(run.info.run_id, "before.bin", str(work / "out")))
    identical = sha256(restored) == sha256(before)
    ok = outcome.get("error") is not None and "big.bin" not in listed and identical
    return DrillResult(
        f"SeaweedFS SIGKILL during a {megabytes} MB log_artifact",
        ok,
        f"client error: {outcome.get('error')}; partial object visible: {'big.bin' in listed}; "
        f"earlier artifact identical: {identical}",
        heal_seconds,
        outcome.get("stall"),
        {"listed": sorted(listed), "error": outcome.get("error"), "identical": identical},
    )


def uploads_survive(
    platform: LocalPlatform,
    work: Path,
    stop: Callable[[LocalPlatform], None],
    what: str,
    *,
    count: int = 3,
    megabytes: int = 20,
) -> DrillResult:
    """Upload ``count`` artifacts of ``megabytes``, ``stop`` the platform (down, or kill -9 of
    every process), ``local up``: every artifact reads back with the same sha256."""
    no_retries()
    client = client_for(platform)
    run = client.create_run(client.create_experiment(f"/drills/survive/{time.time_ns()}"))
    digests = {}
    for index in range(count):
        path = random_file(work / f"artifact-{index}.bin", megabytes)
        client.log_artifact(run.info.run_id, str(path))
        digests[path.name] = sha256(path)
    stop(platform)
    heal_seconds = heal(platform)
    client = client_for(platform)
    back = {
        name: sha256(Path(client.download_artifacts(run.info.run_id, name, str(work / "back")))) for name in digests
    }
    same = sum(back[name] == digest for name, digest in digests.items())
    return DrillResult(
        f"{count} x {megabytes} MB artifacts, then {what}",
        same == count,
        f"{same}/{count} read back with identical sha256",
        heal_seconds,
        None,
        {"identical": same},
    )


def kill_everything(platform: LocalPlatform) -> None:
    """kill -9 of every process of the platform (PostgreSQL, SeaweedFS, gunicorn and workers)."""
    marker = str(platform.state_dir)
    victims = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        try:
            parts = [*(proc.info["cmdline"] or []), proc.info["cwd"] or ""]
        except psutil.Error:
            continue
        if any(marker in part for part in parts) and proc.pid != os.getpid():
            victims.append(proc)
    for proc in victims:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(victims, timeout=10)


def down(platform: LocalPlatform) -> None:
    platform.down(**QUIET)


def run_all(platform: LocalPlatform, work: Path) -> list[DrillResult]:
    return [
        postgres_killed_while_logging(platform),
        s3_killed_during_upload(platform, work / "s3-kill"),
        uploads_survive(platform, work / "down-up", down, "local down + local up"),
        uploads_survive(
            platform, work / "kill-all", kill_everything, "kill -9 of every process + local up", count=1, megabytes=100
        ),
    ]


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        platform = LocalPlatform(work / "state", packaged_local_stack())
        started = time.monotonic()
        platform.up(Ports.free(), **QUIET)
        console.print(f"throwaway platform up in {time.monotonic() - started:.1f}s")
        for sub in ("s3-kill", "down-up", "kill-all"):
            (work / sub).mkdir()
        try:
            results = run_all(platform, work)
        finally:
            platform.down(purge=True, **QUIET)
    table = Table("drill", "result", "what was checked", "time to heal", "longest client stall")
    for r in results:
        table.add_row(
            r.name,
            "[green]pass[/]" if r.passed else "[red]FAIL[/]",
            r.checked,
            f"{r.heal_seconds:.1f} s" if r.heal_seconds is not None else "-",
            f"{r.longest_stall_seconds:.1f} s" if r.longest_stall_seconds is not None else "-",
        )
    console.print(table)
    raise SystemExit(0 if all(r.passed for r in results) else 1)


if __name__ == "__main__":
    main()
