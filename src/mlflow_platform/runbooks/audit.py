"""Governance report: naming, required tags, and aliases that point nowhere."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from .paging import iter_model_versions, iter_runs, resolve_experiments

EXPERIMENT_NAME = re.compile(r"^/[a-z0-9][a-z0-9-]*/[a-z0-9][a-z0-9-]*/[a-z0-9][a-z0-9-]*$")
REQUIRED_RUN_TAGS = ("team", "owner", "git.commit", "data.version", "environment", "purpose")
REQUIRED_VERSION_TAGS = ("training_data", "training_commit", "approved_by")
# Model names are products, not algorithms or versions ("xgboost-fraud-v3", "lgbm_model_final").
BAD_MODEL_NAME = re.compile(
    r"(^|[-_])(v\d+|\d{4}|final|xgb|xgboost|lgbm|lightgbm|bert|resnet|cnn|rnn|lstm|svm|rf|randomforest|"
    r"catboost|gbm|logreg|linear)([-_]|$)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Finding:
    kind: str
    subject: str
    detail: str


def audit(
    client: MlflowClient,
    *,
    experiment_names: list[str] | None = None,
    runs_per_experiment: int = 1000,
    required_run_tags: tuple[str, ...] = REQUIRED_RUN_TAGS,
    required_version_tags: tuple[str, ...] = REQUIRED_VERSION_TAGS,
) -> list[Finding]:
    findings: list[Finding] = []
    for experiment in resolve_experiments(client, experiment_names):
        if experiment.name != "Default":
            findings += _experiment_findings(client, experiment, runs_per_experiment, required_run_tags)
    return findings + _model_findings(client, required_version_tags)


def _experiment_findings(client: MlflowClient, experiment, limit: int, required: tuple[str, ...]) -> list[Finding]:
    findings = []
    if not EXPERIMENT_NAME.match(experiment.name):
        findings.append(Finding("experiment-name", experiment.name, "not /{team}/{project}/{experiment-type}"))
    for i, run in enumerate(iter_runs(client, [experiment.experiment_id])):
        if i >= limit:
            break
        missing = [t for t in required if t not in run.data.tags]
        if missing:
            findings.append(
                Finding("run-tags", f"{experiment.name} run {run.info.run_id}", f"missing {', '.join(missing)}")
            )
    return findings


def _model_findings(client: MlflowClient, required: tuple[str, ...]) -> list[Finding]:
    findings, models = [], set()
    for version in iter_model_versions(client):
        models.add(version.name)
        missing = [t for t in required if t not in (version.tags or {})]
        if missing:
            findings.append(
                Finding("version-tags", f"{version.name} v{version.version}", f"missing {', '.join(missing)}")
            )
    for name in sorted(models):
        if BAD_MODEL_NAME.search(name):
            findings.append(Finding("model-name", name, "names a version or an algorithm; name the product"))
        for alias, version in client.get_registered_model(name).aliases.items():
            try:
                client.get_model_version(name, version)
            except MlflowException:
                findings.append(Finding("dangling-alias", f"{name}@{alias}", f"points at deleted version {version}"))
    return findings
