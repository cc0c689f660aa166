"""Run hygiene: reap runs stuck RUNNING, delete old finished runs (never kept or registered ones)."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from mlflow import MlflowClient
from mlflow.entities import Run

from .paging import PAGE_SIZE, iter_model_versions, iter_runs, resolve_experiments

REAPED_TAG = "mlflow-platform.reaped_at"


@dataclass
class RunReport:
    examined: int = 0
    selected: list[str] = field(default_factory=list)
    spared: dict[str, int] = field(default_factory=dict)  # reason -> count
    changed: int = 0
    experiments: int = 0

    def spare(self, reason: str) -> None:
        self.spared[reason] = self.spared.get(reason, 0) + 1


def _now_ms() -> int:
    return int(time.time() * 1000)


def reap_stuck_runs(
    client: MlflowClient,
    *,
    older_than_hours: float,
    status: str = "FAILED",
    experiment_names: list[str] | None = None,
    experiment_ids: list[str] | None = None,
    dry_run: bool = False,
    page_size: int = PAGE_SIZE,
) -> RunReport:
    """Terminate runs RUNNING for longer than the threshold (their process died without saying)."""
    if status not in ("FAILED", "KILLED"):
        raise ValueError("status must be FAILED or KILLED")
    report = RunReport()
    experiments = resolve_experiments(client, experiment_names, experiment_ids)
    report.experiments = len(experiments)
    if not experiments:
        return report
    cutoff = _now_ms() - int(older_than_hours * 3600 * 1000)
    stuck = list(
        iter_runs(
            client,
            [e.experiment_id for e in experiments],
            f"attributes.status = 'RUNNING' AND attributes.start_time < {cutoff}",
            page_size=page_size,
        )
    )
    report.examined = len(stuck)
    report.selected = [run.info.run_id for run in stuck]
    if dry_run:
        return report
    for run in stuck:
        client.set_tag(run.info.run_id, REAPED_TAG, str(_now_ms()))
        client.set_terminated(run.info.run_id, status=status, end_time=_now_ms())
        report.changed += 1
    return report


def registered_run_ids(client: MlflowClient) -> set[str]:
    """Runs that back a model version, asked of the registry itself (a tag can lie or be missing)."""
    return {version.run_id for version in iter_model_versions(client) if version.run_id}


def cleanup_runs(
    client: MlflowClient,
    *,
    older_than_days: float,
    experiment_names: list[str] | None = None,
    experiment_ids: list[str] | None = None,
    dry_run: bool = True,
    workers: int = 8,
    page_size: int = PAGE_SIZE,
    progress: Callable[[int], None] | None = None,
) -> RunReport:
    """Soft-delete finished runs that ended before the cutoff; `gc` purges them and their artifacts.

    Never deleted: runs tagged keep=true, runs backing a registered model version.
    """
    report = RunReport()
    experiments = resolve_experiments(client, experiment_names, experiment_ids)
    report.experiments = len(experiments)
    if not experiments:
        return report
    protected = registered_run_ids(client)
    cutoff = _now_ms() - int(older_than_days * 86400 * 1000)
    query = f"attributes.status != 'RUNNING' AND attributes.end_time < {cutoff}"
    for run in iter_runs(client, [e.experiment_id for e in experiments], query, page_size=page_size):
        report.examined += 1
        reason = _protection(run, protected)
        if reason:
            report.spare(reason)
        else:
            report.selected.append(run.info.run_id)
    if dry_run or not report.selected:
        return report

    def delete(run_id: str) -> None:
        client.delete_run(run_id)

    with ThreadPoolExecutor(max_workers=workers) as pool:  # one HTTP call per run: overlap them
        for _ in pool.map(delete, report.selected):
            report.changed += 1
            if progress:
                progress(1)
    return report


def _protection(run: Run, registered: set[str]) -> str | None:
    if str(run.data.tags.get("keep", "")).lower() == "true":
        return "keep=true"
    if run.info.run_id in registered:
        return "backs a model version"
    return None
