"""Day 2: every routine change from docs/deploying.md, applied to the stack as shipped, under the same
mocks: state is never replaced or deleted, immutable fields change only by replacement, and the
docs' table is exactly what the comparison finds."""

from __future__ import annotations

import json

import pytest

from mlflow_platform import day2

from .paths import ROOT, captured

pytestmark = pytest.mark.slow  # one plan per change (about three seconds each)


@pytest.fixture(scope="module")
def outcomes() -> dict[str, day2.Outcome]:
    return {c.name: day2.compare(captured(c.stack), day2.plan_of(c, ROOT)) for c in day2.CHANGES}


def test_the_catalogue_covers_the_routine_changes() -> None:
    assert {c.name for c in day2.CHANGES} == {
        "image or MLflow bump",
        "instance class",
        "storage",
        "replicas and workers",
        "server.port",
        "adding a team",
        "turning on sso",
        "engine major",
        "EKS minor",
        "rotating the admin password",
    }


@pytest.mark.parametrize("change", [c.name for c in day2.CHANGES])
def test_no_routine_change_replaces_or_deletes_state(outcomes, change: str) -> None:
    outcome = outcomes[change]
    assert outcome.actions, f"{change} changed nothing: the catalogue would prove nothing"
    assert outcome.harmful() == []


def test_each_change_does_what_its_row_says(outcomes) -> None:
    """The cases where replacement is the point, or must not happen."""
    assert outcomes["server.port"].named("replace") == ["lb-tg", "tracking-tgb"]  # the webhook's immutable ARN
    assert "lb-https" in outcomes["server.port"].named("update")  # the listener moves to the new group
    assert outcomes["engine major"].named("replace") == ["database-params"]  # a new family, auto-named
    assert "database-instance" in outcomes["engine major"].named("update")
    assert set(outcomes["EKS minor"].named("update")) >= {"cluster-eks", "cluster-nodegroup"}
    assert outcomes["instance class"].named("replace") == []
    assert "tracking-migrate" in outcomes["image or MLflow bump"].named("replace")  # a Job per image


def test_a_forced_property_replaces_and_a_replacement_reaches_downstream() -> None:
    """The comparison itself: the vendored schema's ForceNew inputs, and propagation through outputs."""
    base = captured("prod")
    forcing = day2.replace_forcing()
    assert "identifier" in forcing["aws:rds/instance:Instance"] and "port" in forcing["aws:lb/targetGroup:TargetGroup"]
    vendored = json.loads(day2.VENDOR.read_text())
    assert all(len(e["commit"]) == 40 and e["file"].endswith(".go") for e in vendored["resources"].values())
    other_master = day2.Change("rename", "prod", lambda c: day2._section(c, "database", username="other"), "")
    renamed = day2.plan_of(other_master, ROOT)
    outcome = day2.compare(base, renamed)
    assert "database-instance" in outcome.named("replace")  # username is ForceNew on aws_db_instance
    assert outcome.harmful() == ["aws:rds/instance:Instance database-instance would be replaced"]


def test_the_docs_table_is_the_catalogue() -> None:
    from mlflow_platform.docs import DAY2, generated_part

    text = (ROOT / DAY2).read_text()
    assert generated_part(text) == day2.catalogue_markdown(ROOT), (
        f"{DAY2} is stale: run `python -m mlflow_platform.docs --write`"
    )
