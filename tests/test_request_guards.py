"""Which storage a model-version source or an experiment's artifact location may name: the caller's
own workspace's artifacts under the server's root, a run, or a model; nothing that escapes them."""

from __future__ import annotations

import pytest

from mlflow_platform.request_guards import Refused, check_storage_uri, looks_like_sso_identity

ROOT = "s3://bucket/prod"


@pytest.mark.parametrize(
    ("uri", "workspace", "run_id"),
    [
        ("runs:/0123abcd/model", "ranking", "0123abcd"),  # MLflow also checks READ on the run
        ("models:/m-0123abcd", "ranking", ""),
        ("models:/ranking-model/3", "ranking", ""),
        ("mlflow-artifacts:/workspaces/ranking/7/0123abcd/artifacts/model", "ranking", ""),
        ("s3://bucket/prod/workspaces/ranking/7/0123abcd/artifacts/model", "ranking", ""),
        ("S3://bucket/prod/workspaces/ranking/7/x", "ranking", ""),  # schemes are case-insensitive
        ("mlflow-artifacts:/7/0123abcd/artifacts/model", "default", ""),  # the default workspace's legacy layout
        ("mlflow-artifacts:/workspaces/default/7/x", "default", ""),
        ("s3://bucket/prod/7/0123abcd/artifacts", None, ""),  # a server without workspaces
    ],
)
def test_allowed(uri: str, workspace: str | None, run_id: str) -> None:
    assert check_storage_uri(uri, workspace, ROOT, allow_runs_and_models=True) == run_id


@pytest.mark.parametrize(
    "uri",
    [
        "s3://bucket/prod",
        "s3://bucket/prod/",
        "s3://bucket/prod/workspaces/search/7/x",
        "s3://bucket//prod/workspaces/ranking/7/x",
        "s3://bucket/prod//workspaces/ranking/7/x",
        "s3://bucket/prod/workspaces/ranking/../search/7",
        "s3://bucket/prod/workspaces/ranking/%2e%2e/search",
        "s3://bucket/prod/workspaces/ranking/..%2fsearch",
        "s3://bucket/prod/workspaces/ranking\\..\\search",
        "s3://bucket/prod/workspaces/rankingX/7",
        "s3://bucket/prod/workspaces/ranking",
        "s3://bucket/production/workspaces/ranking/7",
        "s3://other-bucket/prod/workspaces/ranking/7",
        "s3://bucket",
        "mlflow-artifacts:/workspaces/search/7/x",
        "mlflow-artifacts:/workspaces/ranking/./7",
        "mlflow-artifacts://host/workspaces/ranking/7",
        "mlflow-artifacts:/7/x",  # the default workspace's objects, from another workspace
        "runs://host/0123abcd",
        "runs:/",
        "runs:/abc/../def",
        "file:///etc",
        "/etc/passwd",
        "gs://bucket/prod/workspaces/ranking/7",
        "http://127.0.0.1:9100/bucket/prod/workspaces/ranking/7",
        "",
    ],
)
def test_refused(uri: str) -> None:
    with pytest.raises(Refused):
        check_storage_uri(uri, "ranking", ROOT, allow_runs_and_models=True)


def test_an_experiment_location_names_no_run_or_model() -> None:
    for uri in ("runs:/0123abcd/x", "models:/m-1"):
        with pytest.raises(Refused):
            check_storage_uri(uri, "ranking", ROOT, allow_runs_and_models=False)
    check_storage_uri("mlflow-artifacts:/workspaces/ranking/exp", "ranking", ROOT, allow_runs_and_models=False)


def test_the_default_workspace_cannot_reach_into_team_workspaces() -> None:
    for uri in (
        "mlflow-artifacts:/workspaces/ranking/7",
        "s3://bucket/prod/workspaces/ranking/7",
        "s3://bucket/prod/workspaces",
    ):
        with pytest.raises(Refused):
            check_storage_uri(uri, "default", ROOT, allow_runs_and_models=True)


@pytest.mark.parametrize(
    ("name", "claim", "person"),
    [
        ("gina@example.com", "email", True),
        ("gina@example.com", "upn", True),
        ("gina@example.com", "preferred_username", True),
        ("ci-ranking", "email", False),
        ("gina@example.com", "sub", False),  # a claim of no known shape: only the admin-only rule applies
    ],
)
def test_names_shaped_like_people(name: str, claim: str, person: bool) -> None:
    assert looks_like_sso_identity(name, claim) is person


@pytest.mark.parametrize(
    ("uri", "experiment"),
    [
        ("s3://bucket/prod/workspaces/ranking/7/abc/artifacts", "7"),
        ("mlflow-artifacts:/workspaces/ranking/7/abc/artifacts", "7"),
        ("s3://bucket/prod/7/abc/artifacts", "7"),  # default's legacy layout
        ("mlflow-artifacts:/7", "7"),
        ("s3://bucket/prod/workspaces/ranking/models/x", "models"),  # not an id: refused by the guard
        ("runs:/abc/model", None),  # MLflow checks READ on the run itself
        ("models:/m-1", None),
    ],
)
def test_the_experiment_a_source_lies_under(uri: str, experiment: str | None) -> None:
    from mlflow_platform.request_guards import experiment_of

    assert experiment_of(uri, ROOT) == experiment


def test_fields_are_read_under_both_json_spellings() -> None:
    from mlflow_platform.request_guards import _values

    assert _values({"artifact_location": "a", "artifactLocation": "b"}, "artifact_location") == ["a", "b"]
    assert _values({"artifactLocation": "b"}, "artifact_location") == ["b"]
    assert _values({"source": "s"}, "source") == ["s"]
    assert _values({"source": ""}, "source") == []
