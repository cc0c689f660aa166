"""Purge runs deleted long enough ago, artifacts included, through the server's artifact proxy."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial

from ..database.workspace_mode import DEFAULT, holds_team_data, workspace_mode
from ..errors import RunbookError

#: MLflow's own grammar for ``mlflow gc --older-than`` (days, hours, minutes, seconds, in that
#: order), so a value is refused here, before anything is listed, exactly when MLflow would refuse it.
OLDER_THAN = re.compile(
    r"^((?P<days>[.\d]+?)d)?((?P<hours>[.\d]+?)h)?((?P<minutes>[.\d]+?)m)?((?P<seconds>[.\d]+?)s)?$"
)


def _seconds(older_than: str) -> float:
    parts = OLDER_THAN.match(older_than)
    if not older_than or parts is None:
        raise RunbookError(
            f"--older-than {older_than!r}: use days, hours, minutes, seconds in that order, e.g. 30d, 1d12h"
        )
    try:
        return timedelta(**{k: float(v) for k, v in parts.groupdict().items() if v}).total_seconds()
    except ValueError:
        raise RunbookError(f"--older-than {older_than!r}: not a number of days, hours, minutes or seconds") from None


@dataclass
class GcReport:
    candidates: list[str] = field(default_factory=list)
    purged: bool = False
    processes: int = 0


#: Runs per `mlflow gc` process, and processes at once: measured at 100k deleted runs in
#: benchmarks/data_scale.py (one process purges about 50 runs a second, waiting on the artifact
#: proxy and the database most of the time).
CHUNK = 2_000
PARALLEL = 4


def _workspace(backend_store_uri: str) -> str | None:
    """The workspace to purge in, when the database holds a team's data (else single-tenant)."""
    if not holds_team_data(backend_store_uri):
        return None
    from mlflow.utils.workspace_context import get_request_workspace

    return get_request_workspace() or DEFAULT


def deleted_runs(backend_store_uri: str, older_than: str) -> list[str]:
    """Exactly the runs `mlflow gc --older-than` purges: deleted at least that long ago (MLflow's
    own query on ``deleted_time``, in the workspace it would use)."""
    from contextlib import nullcontext

    from mlflow.tracking import _get_store
    from mlflow.utils.workspace_context import WorkspaceContext

    workspace = _workspace(backend_store_uri)
    with workspace_mode(workspace is not None):
        store = _get_store(backend_store_uri)
        try:
            with WorkspaceContext(workspace) if workspace else nullcontext():
                return sorted(store._get_deleted_runs(older_than=int(_seconds(older_than) * 1000)))
        finally:
            store.engine.dispose()


def _mlflow_gc(backend_store_uri: str, tracking_uri: str, older_than: str, run_ids: list[str] | None) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    argv = [sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", backend_store_uri, "--older-than", older_than]
    if run_ids:
        argv += ["--run-ids", ",".join(run_ids)]
    workspace = _workspace(backend_store_uri)
    if workspace:  # MLflow refuses to open a database holding a team's data in single-tenant mode
        env["MLFLOW_ENABLE_WORKSPACES"] = "true"
        argv += ["--workspace", workspace]
    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RunbookError(f"mlflow gc failed: {result.stderr.strip()[-2000:]}")


def gc(
    *,
    backend_store_uri: str,
    tracking_uri: str,
    older_than: str = "30d",
    dry_run: bool = False,
    parallel: int = PARALLEL,
    chunk: int = CHUNK,
) -> GcReport:
    """`mlflow gc` with the tracking URI and credentials set, so proxied artifacts are deleted too.

    MLflow's gc purges one run after another; at 100k deleted runs that is over half an hour. So
    the runs it would purge are split into chunks, each purged by MLflow's own `mlflow gc
    --run-ids … --older-than …` (which checks every run again), ``parallel`` at a time.

    The first chunk runs alone: its process also purges the deleted experiments (with all their
    runs) and logged models, so the runs left for the others are read again after it. Every
    process still looks for experiments and models, and a run may be restored meanwhile: a chunk
    that fails is tried once more with its runs that are still waiting to be purged."""
    _seconds(older_than)  # a malformed value is refused before anything runs
    report = GcReport(candidates=deleted_runs(backend_store_uri, older_than))
    if dry_run:
        return report
    purge = partial(_mlflow_gc, backend_store_uri, tracking_uri, older_than)
    purge(report.candidates[:chunk] or None)
    left = _still_deleted(backend_store_uri, older_than, report.candidates[chunk:])
    chunks = [left[i : i + chunk] for i in range(0, len(left), chunk)]
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        failed = [c for c, f in [(c, pool.submit(purge, c)) for c in chunks] if f.exception()]
        retried = [_still_deleted(backend_store_uri, older_than, c) for c in failed]
        errors = [f.exception() for f in [pool.submit(purge, c) for c in retried if c] if f.exception()]
    report.processes = 1 + len(chunks) + len(failed)
    if errors:
        raise RunbookError(
            f"{len(errors)} of {len(chunks)} chunks of runs failed twice (the others were purged; run gc again): "
            f"{errors[0]}"
        )
    report.purged = True
    return report


def _still_deleted(backend_store_uri: str, older_than: str, run_ids: list[str]) -> list[str]:
    """Those of ``run_ids`` still waiting to be purged (not purged by another process, not restored)."""
    if not run_ids:
        return []
    waiting = set(deleted_runs(backend_store_uri, older_than))
    return [r for r in run_ids if r in waiting]
