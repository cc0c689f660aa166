"""Unused-model cleanup (runbooks/models.py) against the live registry: what an alias, a legacy
stage, keep=true or a recent change protects, dry run by default. Time is moved forward through
``now_ms`` (the registry's timestamps cannot be backdated through its API)."""

from __future__ import annotations

import time
import warnings

import pytest

from mlflow_platform.runbooks.models import prune_unused_models

DAY_MS = 86_400_000


@pytest.fixture
def models(mlflow_client):
    """Four models made now, each with one version: only the plain one is unused in 100 days."""
    stamp = time.time_ns()
    experiment = mlflow_client.create_experiment(f"/platform/tests/prune-{stamp}")
    run = mlflow_client.create_run(experiment)
    names = {kind: f"prune-{kind}-{stamp}" for kind in ("plain", "aliased", "staged", "kept")}
    for kind, name in names.items():
        mlflow_client.create_registered_model(name, tags={"keep": "true"} if kind == "kept" else None)
        version = mlflow_client.create_model_version(name, f"{run.info.artifact_uri}/model", run.info.run_id)
        if kind == "aliased":
            mlflow_client.set_registered_model_alias(name, "champion", version.version)
        if kind == "staged":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # stages are deprecated, and still used
                mlflow_client.transition_model_version_stage(name, version.version, "Production")
    return names


def _mine(models: dict[str, str]) -> str:
    return f"name LIKE 'prune-%-{models['plain'].rsplit('-', 1)[1]}'"


def _ours(names: dict[str, str], found: list[str]) -> set[str]:
    return {kind for kind, name in names.items() if name in found}


def test_nothing_is_unused_today(mlflow_client, models) -> None:
    result = prune_unused_models(mlflow_client, older_than_days=90, filter_string=_mine(models))
    assert _ours(models, result.unused) == set()


def test_in_100_days_only_the_model_nothing_points_at_is_unused_and_the_dry_run_deletes_nothing(
    mlflow_client, models
) -> None:
    later = int(time.time() * 1000) + 100 * DAY_MS
    result = prune_unused_models(mlflow_client, older_than_days=90, filter_string=_mine(models), now_ms=later)
    assert _ours(models, result.unused) == {"plain"}
    assert {"has an alias", "a version in Production", "keep=true"} <= set(result.kept)
    assert result.deleted == 0
    assert mlflow_client.get_registered_model(models["plain"]).name == models["plain"]


def test_execute_deletes_the_unused_ones_only(mlflow_client, models) -> None:
    from mlflow.exceptions import MlflowException

    later = int(time.time() * 1000) + 100 * DAY_MS
    result = prune_unused_models(
        mlflow_client, older_than_days=90, filter_string=_mine(models), now_ms=later, dry_run=False
    )
    assert result.unused == [models["plain"]] and result.deleted == 1 and result.examined == 4
    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST|not found"):
        mlflow_client.get_registered_model(models["plain"])
    for kind in ("aliased", "staged", "kept"):
        assert mlflow_client.get_registered_model(models[kind]).name == models[kind]


def test_the_command_is_a_dry_run_unless_told_to_execute(platform, models) -> None:
    from typer.testing import CliRunner

    from mlflow_platform.cli import app

    env = {"MLFLOW_PLATFORM_STATE_DIR": str(platform.state_dir)}
    args = ["prune-models", "--local", "--older-than-days", "0", "--filter", _mine(models)]
    result = CliRunner().invoke(app, args, env=env, terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "dry run: nothing was deleted" in result.output and models["plain"] in result.output
    bad = CliRunner().invoke(app, [*args[:-1], "name ~ 'x'"], env=env)
    assert bad.exit_code != 0 and "prune-models:" in bad.output and "Traceback" not in bad.output
