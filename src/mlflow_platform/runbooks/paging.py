"""Every search pages to the end: a single `max_results=500` call silently misses the rest."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator

from mlflow import MlflowClient
from mlflow.entities import Experiment, Run, ViewType
from mlflow.entities.model_registry import ModelVersion, RegisteredModel

PAGE_SIZE = 1000


def iter_runs(
    client: MlflowClient,
    experiment_ids: list[str],
    filter_string: str = "",
    order_by: list[str] | None = None,
    page_size: int = PAGE_SIZE,
) -> Iterator[Run]:
    token = None
    while True:
        page = client.search_runs(
            experiment_ids,
            filter_string=filter_string,
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=page_size,
            order_by=order_by,
            page_token=token,
        )
        yield from page
        token = page.token
        if not token:
            return


def iter_model_versions(client: MlflowClient, filter_string: str = "", page_size: int = 1000) -> Iterator[ModelVersion]:
    token = None
    while True:
        page = client.search_model_versions(filter_string or None, max_results=page_size, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def iter_registered_models(client: MlflowClient, filter_string: str | None = None) -> Iterator[RegisteredModel]:
    token = None
    while True:
        page = client.search_registered_models(filter_string, max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def iter_experiments(client: MlflowClient) -> Iterator[Experiment]:
    token = None
    while True:
        page = client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def resolve_experiments(
    client: MlflowClient, names: list[str] | None = None, ids: list[str] | None = None
) -> list[Experiment]:
    """Experiments by id and/or name pattern (`/search-team/*`); none given means all."""
    if not names and not ids:
        return list(iter_experiments(client))
    chosen = {e.experiment_id: e for e in (client.get_experiment(i) for i in ids or [])}
    if names:
        for experiment in iter_experiments(client):
            if any(fnmatch.fnmatchcase(experiment.name, pattern) for pattern in names):
                chosen[experiment.experiment_id] = experiment
    return list(chosen.values())
