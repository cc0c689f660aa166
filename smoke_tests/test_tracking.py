"""Tracking as an ML team uses it: tagged runs, params, step-wise metrics, search."""

import re
import time

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from .target import Target

REQUIRED_TAGS = ("team", "owner", "git.commit", "data.version", "environment", "purpose")


def test_experiment_name_follows_team_project_type(client: MlflowClient, experiment_id: str) -> None:
    name = client.get_experiment(experiment_id).name
    assert re.fullmatch(r"/[a-z0-9-]+/[a-z0-9-]+/[a-z0-9-]+", name), name


def test_run_with_required_tags_params_and_metric_history(
    target: Target, client: MlflowClient, experiment_id: str
) -> None:
    tags = {
        "team": "platform",
        "owner": "smoke@example.com",
        "git.commit": "0" * 40,
        "data.version": "v2026.11.24",
        "environment": "smoke",
        "purpose": "smoke-test",
        "smoke.session": target.session_id,
    }
    run = client.create_run(experiment_id, run_name=f"smoke-{target.session_id}", tags=tags)
    run_id = run.info.run_id
    steps = 50
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        params=[Param("learning_rate", "2e-05"), Param("batch_size", "32")],
        metrics=[Metric("train_loss", 1.0 / (step + 1), now + step, step) for step in range(steps)]
        + [Metric("val_ndcg_at_10", 0.5 + step / 200, now + step, step) for step in range(steps)],
    )
    client.set_terminated(run_id, "FINISHED")

    stored = client.get_run(run_id)
    for tag in REQUIRED_TAGS:
        assert stored.data.tags.get(tag) == tags[tag], tag
    assert stored.data.params == {"learning_rate": "2e-05", "batch_size": "32"}
    history = client.get_metric_history(run_id, "train_loss")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(steps))
    assert sorted(history, key=lambda m: m.step)[-1].value == 1.0 / steps
    assert stored.data.metrics["val_ndcg_at_10"] == 0.5 + (steps - 1) / 200
    assert stored.info.status == "FINISHED"

    found = client.search_runs([experiment_id], filter_string=f"tags.`smoke.session` = '{target.session_id}'")
    assert [r.info.run_id for r in found] == [run_id]


def test_run_tags_can_be_added_later(client: MlflowClient, experiment_id: str) -> None:
    run = client.create_run(experiment_id)
    client.set_tag(run.info.run_id, "approved_by", "smoke")
    client.log_batch(run.info.run_id, tags=[RunTag("keep", "false")])
    assert client.get_run(run.info.run_id).data.tags["approved_by"] == "smoke"
    client.set_terminated(run.info.run_id)
