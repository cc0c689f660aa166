"""Alias-based promotion: a validation gate, promotion under a lock, rollback.

champion is what serving loads (`models:/<name>@champion`); the version it replaces keeps the
alias previous-champion, which rollback restores. Every change happens under a lock and re-reads
the aliases inside it, so two promotions racing from two CI jobs cannot lose an update.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from ..aliases import CHALLENGER, CHAMPION, PREVIOUS, ROLLED_BACK
from ..errors import RunbookError
from .locks import lock_for


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _actor() -> str:
    return os.environ.get("GITHUB_ACTOR") or os.environ.get("MLFLOW_TRACKING_USERNAME") or getpass.getuser()


def alias_version(client: MlflowClient, model: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(model, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def resolve_candidate(
    client: MlflowClient, model: str, *, alias: str | None = CHALLENGER, version: str | None = None
) -> ModelVersion:
    if version:
        try:
            return client.get_model_version(model, version)
        except MlflowException:
            raise RunbookError(f"model {model} has no version {version}") from None
    found = alias_version(client, model, alias)
    if found is None:
        raise RunbookError(f"model {model} has no @{alias} version to validate; set the alias or pass --version")
    return found


@dataclass
class GateResult:
    model: str
    metric: str
    candidate: str
    candidate_value: float | None
    champion: str | None = None
    champion_value: float | None = None
    threshold: float | None = None
    max_regression: float = 0.02
    reasons: list[str] = field(default_factory=list)
    #: the comparisons the gate made, with their numbers ("0.83 >= threshold 0.82")
    arithmetic: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.reasons

    def tags(self) -> dict[str, str]:
        tags = {
            "gate.metric": self.metric,
            "gate.value": f"{self.candidate_value:.6g}",
            "gate.max_regression": f"{self.max_regression:.4g}",
        }
        if self.threshold is not None:
            tags["gate.threshold"] = f"{self.threshold:.6g}"
        if self.champion_value is not None:
            tags["gate.champion_value"] = f"{self.champion_value:.6g}"
            tags["gate.champion_version"] = str(self.champion)
        return tags


def _metric(client: MlflowClient, version: ModelVersion, metric: str) -> float:
    if not version.run_id:
        raise RunbookError(f"{version.name} v{version.version} has no run to read {metric} from")
    metrics = client.get_run(version.run_id).data.metrics
    if metric not in metrics:
        known = ", ".join(sorted(metrics)) or "none"
        raise RunbookError(
            f"metric {metric!r} not found in run {version.run_id} ({version.name} v{version.version}); it has: {known}"
        )
    return metrics[metric]


def validate(
    client: MlflowClient,
    model: str,
    metric: str,
    *,
    threshold: float | None = None,
    max_regression: float = 0.02,
    higher_is_better: bool = True,
    alias: str | None = CHALLENGER,
    version: str | None = None,
) -> GateResult:
    """The gate: an absolute threshold, and at most `max_regression` (relative) below the champion."""
    candidate = resolve_candidate(client, model, alias=alias, version=version)
    value = _metric(client, candidate, metric)
    result = GateResult(model, metric, candidate.version, value, threshold=threshold, max_regression=max_regression)
    better = (lambda a, b: a >= b) if higher_is_better else (lambda a, b: a <= b)
    sign = ">=" if higher_is_better else "<="
    if threshold is not None:
        ok = better(value, threshold)
        result.arithmetic.append(f"{value:.6g} {sign} threshold {threshold:.6g}: {'yes' if ok else 'no'}")
        if not ok:
            result.reasons.append(
                f"{metric} {value:.6g} is {'below' if higher_is_better else 'above'} the threshold {threshold:.6g}"
            )
    champion = alias_version(client, model, CHAMPION)
    if champion is not None and champion.version != candidate.version:
        result.champion = champion.version
        result.champion_value = _metric(client, champion, metric)
        factor = (1 - max_regression) if higher_is_better else (1 + max_regression)
        limit = result.champion_value * factor
        result.arithmetic.append(
            f"{value:.6g} {sign} champion {result.champion_value:.6g} x {factor:.4g} = {limit:.6g}: "
            f"{'yes' if better(value, limit) else 'no'}"
        )
        if not better(value, limit):
            result.reasons.append(
                f"{metric} {value:.6g} regresses more than {max_regression:.1%} from champion "
                f"v{champion.version} ({result.champion_value:.6g})"
            )
    return result


@dataclass
class Change:
    """What a registry runbook did (or, dry, would do)."""

    model: str
    actions: list[str] = field(default_factory=list)
    changed: bool = False


def _source_commit(client: MlflowClient, version: ModelVersion) -> str | None:
    tags = version.tags or {}
    if tags.get("training_commit"):
        return tags["training_commit"]
    if version.run_id:
        run_tags = client.get_run(version.run_id).data.tags
        return run_tags.get("mlflow.source.git.commit") or run_tags.get("git.commit")
    return None


def promote(
    client: MlflowClient,
    model: str,
    metric: str,
    *,
    lock_url: str | None,
    threshold: float | None = None,
    max_regression: float = 0.02,
    higher_is_better: bool = True,
    alias: str | None = CHALLENGER,
    version: str | None = None,
    approved_by: str | None = None,
    dry_run: bool = False,
    lock_timeout: float = 30.0,
) -> tuple[Change, GateResult | None]:
    """Gate, then under the lock: champion -> previous-champion, candidate -> champion, approval tags."""
    if lock_url is None and not dry_run:
        raise RunbookError("promote changes the registry: pass --lock redis://…, dynamodb://<table> or local")
    change = Change(model)
    if version is None and alias and alias_version(client, model, alias) is None:
        settled = _already_promoted(client, model, alias)
        if settled:
            change.actions.append(settled)
            return change, None
    candidate = resolve_candidate(client, model, alias=alias, version=version)
    with lock_for(None if dry_run else lock_url, f"{model}:{CHAMPION}", timeout=lock_timeout):
        current = alias_version(client, model, CHAMPION)  # read inside the lock: no lost update
        if current is not None and current.version == candidate.version:
            change.actions.append(f"v{candidate.version} is already @{CHAMPION}: nothing to do")
            return change, None
        gate = validate(
            client,
            model,
            metric,
            threshold=threshold,
            max_regression=max_regression,
            higher_is_better=higher_is_better,
            version=candidate.version,
        )
        if not gate.passed:
            raise RunbookError(f"gate failed for {model} v{candidate.version}: " + "; ".join(gate.reasons))
        tags = {**gate.tags(), "approved_by": approved_by or _actor(), "approved_at": _now()}
        if commit := _source_commit(client, candidate):
            tags["source_commit"] = commit
        if current is not None:
            tags["promoted_over_version"] = current.version
            change.actions.append(f"@{PREVIOUS} -> v{current.version}")
        change.actions.append(f"@{CHAMPION} -> v{candidate.version}")
        change.actions.append(
            "tags on v{}: {}".format(candidate.version, ", ".join(f"{k}={v}" for k, v in tags.items()))
        )
        if not dry_run:
            _apply_promotion(client, change, candidate, current, tags, alias)
    return change, gate


def _apply_promotion(
    client: MlflowClient,
    change: Change,
    candidate: ModelVersion,
    current: ModelVersion | None,
    tags: dict[str, str],
    alias: str | None,
) -> None:
    model = change.model
    if current is not None:
        client.set_registered_model_alias(model, PREVIOUS, current.version)
    client.set_registered_model_alias(model, CHAMPION, candidate.version)
    for key, value in tags.items():
        client.set_model_version_tag(model, candidate.version, key, value)
    if alias and alias not in (CHAMPION, PREVIOUS) and alias_version(client, model, alias) is not None:
        client.delete_registered_model_alias(model, alias)  # the challenger has been decided
        change.actions.append(f"@{alias} removed")
    change.changed = True


def _already_promoted(client: MlflowClient, model: str, alias: str) -> str | None:
    """A re-run after a successful promotion (which cleared @challenger) is a no-op, not an error."""
    champion = alias_version(client, model, CHAMPION)
    if champion is None or "approved_at" not in (champion.tags or {}):
        return None
    return (
        f"nothing to promote: no @{alias}; @{CHAMPION} is v{champion.version}, promoted "
        f"{champion.tags['approved_at']}: nothing to do"
    )


def rollback(
    client: MlflowClient,
    model: str,
    *,
    reason: str,
    lock_url: str | None,
    dry_run: bool = False,
    lock_timeout: float = 30.0,
) -> Change:
    """champion -> previous-champion's version; the bad version keeps @rolled-back and why."""
    if lock_url is None and not dry_run:
        raise RunbookError("rollback changes the registry: pass --lock redis://…, dynamodb://<table> or local")
    change = Change(model)
    with lock_for(None if dry_run else lock_url, f"{model}:{CHAMPION}", timeout=lock_timeout):
        previous = alias_version(client, model, PREVIOUS)
        if previous is None:
            raise RunbookError(f"model {model} has no @{PREVIOUS}: nothing to roll back to; nothing was changed")
        current = alias_version(client, model, CHAMPION)
        if current is not None and current.version == previous.version:
            raise RunbookError(f"@{CHAMPION} already is v{previous.version}; nothing was changed")
        change.actions.append(f"@{CHAMPION} -> v{previous.version}")
        if current is not None:
            change.actions.append(f"@{ROLLED_BACK} -> v{current.version} (reason: {reason})")
        change.actions.append(f"@{PREVIOUS} removed (a second rollback needs a new promotion first)")
        if dry_run:
            return change
        client.set_registered_model_alias(model, CHAMPION, previous.version)
        if current is not None:
            client.set_registered_model_alias(model, ROLLED_BACK, current.version)
            client.set_model_version_tag(model, current.version, "rollback_reason", reason)
            client.set_model_version_tag(model, current.version, "rolled_back_at", _now())
            client.set_model_version_tag(model, current.version, "rolled_back_by", _actor())
        client.delete_registered_model_alias(model, PREVIOUS)
        change.changed = True
    return change
