"""Unused registered models: the guide's monthly "models nobody uses" item, dry run first.

A model is unused when nothing points at it and nobody has touched it for ``older_than_days``:
no alias (an alias is how serving and promotion name a version), no version in a legacy
``Staging``/``Production`` stage, no ``keep=true`` tag on the model, and neither the model nor
any of its versions updated within the window. Deleting one deletes its versions' registry
entries (MLflow's ``delete_registered_model``); the runs and artifacts that produced them stay
until ``cleanup-runs`` and ``gc`` say otherwise.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion, RegisteredModel

from .paging import iter_model_versions, iter_registered_models

LIVE_STAGES = {"Staging", "Production"}


@dataclass
class ModelPrune:
    examined: int = 0
    unused: list[str] = field(default_factory=list)
    kept: dict[str, int] = field(default_factory=dict)  # reason -> count
    deleted: int = 0

    def keep(self, reason: str) -> None:
        self.kept[reason] = self.kept.get(reason, 0) + 1


def _keep_reason(model: RegisteredModel, versions: list[ModelVersion], cutoff_ms: int) -> str | None:
    if model.aliases:
        return "has an alias"
    if str(model.tags.get("keep", "")).lower() == "true":
        return "keep=true"
    if (model.last_updated_timestamp or 0) >= cutoff_ms:
        return "updated recently"
    for version in versions:
        if version.current_stage in LIVE_STAGES:
            return f"a version in {version.current_stage}"
        if (version.last_updated_timestamp or 0) >= cutoff_ms:
            return "a version updated recently"
    return None


def prune_unused_models(
    client: MlflowClient,
    *,
    older_than_days: float,
    filter_string: str | None = None,
    dry_run: bool = True,
    now_ms: int | None = None,
) -> ModelPrune:
    """Find (and unless ``dry_run``, delete) the unused models of the client's workspace, among
    those ``filter_string`` (MLflow's registered-model search syntax) selects."""
    cutoff = (now_ms or int(time.time() * 1000)) - int(older_than_days * 86_400_000)
    result = ModelPrune()
    versions: dict[str, list[ModelVersion]] = defaultdict(list)
    for version in iter_model_versions(client):  # one paged read, not one search per model
        versions[version.name].append(version)
    for model in iter_registered_models(client, filter_string):
        result.examined += 1
        reason = _keep_reason(model, versions[model.name], cutoff)
        if reason:
            result.keep(reason)
        else:
            result.unused.append(model.name)
    if not dry_run:
        for name in result.unused:
            client.delete_registered_model(name)
            result.deleted += 1
    return result
