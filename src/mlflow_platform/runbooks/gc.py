"""Purge runs deleted long enough ago, artifacts included, through the server's artifact proxy."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

from mlflow import MlflowClient
from mlflow.entities import ViewType

from . import RunbookError
from .paging import iter_experiments
from .workspace_mode import DEFAULT, holds_team_data

UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def _seconds(older_than: str) -> float:
    total, number = 0.0, ""
    for char in older_than:
        if char.isdigit() or char == ".":
            number += char
        elif char in UNITS and number:
            total, number = total + float(number) * UNITS[char], ""
        else:
            raise RunbookError(f"--older-than {older_than!r}: use e.g. 30d, 12h, 1d2h")
    if number:
        raise RunbookError(f"--older-than {older_than!r}: every number needs a unit (d, h, m, s)")
    return total


@dataclass
class GcReport:
    candidates: list[str] = field(default_factory=list)
    purged: bool = False


def gc(
    client: MlflowClient, *, backend_store_uri: str, tracking_uri: str, older_than: str = "30d", dry_run: bool = False
) -> GcReport:
    """`mlflow gc` with the tracking URI and credentials set, so proxied artifacts are deleted too."""
    cutoff = (time.time() - _seconds(older_than)) * 1000
    report = GcReport()
    experiment_ids = [e.experiment_id for e in iter_experiments(client)]
    token = None
    while experiment_ids:
        page = client.search_runs(
            experiment_ids, run_view_type=ViewType.DELETED_ONLY, max_results=1000, page_token=token
        )
        report.candidates += [
            r.info.run_id
            for r in page
            if (r.info.end_time or r.info.start_time or 0) <= cutoff or older_than in ("0d", "0s")
        ]
        token = page.token
        if not token:
            break
    if dry_run:
        return report
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    argv = [sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", backend_store_uri, "--older-than", older_than]
    if holds_team_data(backend_store_uri):
        # MLflow refuses to open a database holding a team's data in single-tenant mode.
        from mlflow.utils.workspace_context import get_request_workspace

        env["MLFLOW_ENABLE_WORKSPACES"] = "true"
        argv += ["--workspace", get_request_workspace() or DEFAULT]
    result = subprocess.run(
        argv,
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RunbookError(f"mlflow gc failed: {result.stderr.strip()[-2000:]}")
    report.purged = True
    return report
