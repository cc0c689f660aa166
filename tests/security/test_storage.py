"""Storage a member names itself: a model version's source and an experiment's artifact location
may not point the server's bucket-wide credentials at another team's objects (item 2)."""

from __future__ import annotations

import json
import secrets
import uuid

from mlflow_platform.local.platform import LocalPlatform

from .conftest import TeamData, User

VERSION_CREATE = "/api/2.0/mlflow/model-versions/create"
VERSION_ARTIFACT = "/model-versions/get-artifact"


def _root(platform: LocalPlatform) -> str:
    return f"s3://{platform.bucket}/{platform.config.artifacts.prefix}"


def _model(ben: User) -> str:
    name = f"ranking-probe-{secrets.token_hex(3)}"
    answer = ben.send("POST", "/api/2.0/mlflow/registered-models/create", "ranking", body={"name": name})
    assert answer.status == 200, answer.text
    return name


def _sources(platform: LocalPlatform, target: TeamData) -> list[str]:
    root, bucket = _root(platform), platform.bucket
    prefix = platform.config.artifacts.prefix
    other = target.artifact.rsplit("/", 1)[0]  # workspaces/search/<exp>/<run>/artifacts
    return [
        root,
        f"{root}/",
        f"{root}/{other}",
        f"S3://{bucket}/{prefix}",
        f"s3://{bucket}//{prefix}",
        f"s3://{bucket}/{prefix}/workspaces/ranking/../search",
        f"s3://{bucket}/{prefix}/workspaces/ranking/%2e%2e/search",
        f"s3://{bucket}/{prefix}/workspaces/ranking/..%2fsearch",
        f"s3://{bucket}/{prefix}/workspaces/rankingX",
        f"s3://{bucket}",
        f"mlflow-artifacts:/{other}",
        "mlflow-artifacts:/workspaces/ranking/../search",
        f"mlflow-artifacts://127.0.0.1/{other}",
        f"runs:/{target.run_id}/artifacts",
        "file:///etc",
        "/etc",
        f"http://127.0.0.1:{platform.state.ports.s3}/{bucket}/{prefix}",
    ]


def test_a_version_source_outside_ones_workspace_is_refused(
    platform: LocalPlatform, users: dict[str, User], search_data: TeamData
) -> None:
    ben, model = users["ben"], _model(users["ben"])
    inside = search_data.artifact.split("/", 2)[2].rsplit("/", 1)[0]  # <exp>/<run>/artifacts
    for source in _sources(platform, search_data):
        created = ben.send("POST", VERSION_CREATE, "ranking", body={"name": model, "source": source})
        assert created.status in (400, 403), f"{source}: {created.status} {created.text[:200]}"
        if created.status == 200:  # pragma: no cover - the failure message above names it
            break
    outside = f"{_root(platform)}/{search_data.artifact.rsplit('/', 1)[0]}"
    inner = json.dumps({"name": model, "source": outside})
    for body, kind in ((json.dumps(inner).encode(), "application/json"), (inner.encode(), "text/plain")):
        # Double-encoded JSON (MLflow decodes it again for old clients), and JSON under another type.
        sent = ben.send("POST", VERSION_CREATE, "ranking", {"Content-Type": kind}, body)
        assert sent.status in (400, 403), f"{kind} {body[:40]!r}: {sent.status} {sent.text[:200]}"
    # Whatever got stored before this check existed is refused at read time too.
    listed = ben.send("GET", f"/api/2.0/mlflow/registered-models/get?name={model}", "ranking").json()
    assert not listed["registered_model"].get("latest_versions"), "a version was created"
    query = f"?name={model}&version=1&path=workspaces/search/{inside}/secret.txt"
    read = ben.send("GET", VERSION_ARTIFACT + query, "ranking")
    assert read.status in (400, 403, 404) and b"only search" not in read.body


def test_a_version_from_ones_own_run_still_registers_and_reads(users: dict[str, User], ranking_data: TeamData) -> None:
    """The control: `runs:/` of one's own run registers (MLflow wants its run_id too), and a source
    inside one's own workspace's artifacts registers and reads back through the server."""
    ben = users["ben"]
    model = _model(ben)
    body = {"name": model, "source": f"runs:/{ranking_data.run_id}/", "run_id": ranking_data.run_id}
    assert ben.send("POST", VERSION_CREATE, "ranking", body=body).status == 200
    own = "mlflow-artifacts:/" + ranking_data.artifact.rsplit("/", 1)[0]  # the run's artifacts: MLflow wants run_id
    created = ben.send(
        "POST", VERSION_CREATE, "ranking", body={"name": model, "source": own, "run_id": ranking_data.run_id}
    )
    assert created.status == 200, created.text[:300]
    version = created.json()["model_version"]["version"]
    read = ben.send("GET", f"{VERSION_ARTIFACT}?name={model}&version={version}&path=secret.txt", "ranking")
    assert read.status == 200 and read.body == b"only ranking", f"{read.status} {read.text[:200]}"


def test_an_experiment_cannot_be_placed_in_another_teams_prefix(
    platform: LocalPlatform, users: dict[str, User], search_data: TeamData
) -> None:
    ben = users["ben"]
    other = search_data.artifact.rsplit("/", 3)[0]  # workspaces/search/<exp>
    for location in (f"{_root(platform)}/{other}", f"mlflow-artifacts:/{other}", "file:///tmp", _root(platform)):
        created = ben.send(
            "POST",
            "/api/2.0/mlflow/experiments/create",
            "ranking",
            body={"name": f"/ranking/squat/{secrets.token_hex(3)}", "artifact_location": location},
        )
        assert created.status in (400, 403), f"{location}: {created.status} {created.text[:200]}"


def test_a_member_reads_no_other_teams_artifact_through_any_artifact_route(
    users: dict[str, User], search_data: TeamData, ranking_data: TeamData
) -> None:
    ben, path = users["ben"], search_data.artifact
    inside = path.split("/", 2)[2]  # <exp>/<run>/artifacts/secret.txt
    own = ranking_data.artifact.rsplit("/", 4)[0]  # workspaces/ranking
    attempts = [
        f"/api/2.0/mlflow-artifacts/artifacts/{path}",
        f"/ajax-api/2.0/mlflow-artifacts/artifacts/{path}",
        f"/api/2.0/mlflow-artifacts/artifacts/{own}/../search/{inside}",
        f"/api/2.0/mlflow-artifacts/artifacts/{own}/%2e%2e/search/{inside}",
        f"/api/2.0/mlflow-artifacts/artifacts/{own}%2f..%2fsearch/{inside}",
        f"/api/2.0/mlflow-artifacts/artifacts//{path}",
        f"/get-artifact?path=secret.txt&run_uuid={search_data.run_id}",
        f"/api/2.0/mlflow/artifacts/list?run_id={search_data.run_id}",
    ]
    for attempt in attempts:
        for workspace in ("ranking", "search"):
            answer = ben.send("GET", attempt, workspace)
            # 308: Flask merges the doubled slash and redirects; following it is the first attempt.
            assert answer.status in (308, 400, 403, 404) and b"only search" not in answer.body, (
                f"{attempt} in {workspace}: {answer.status}"
            )
    assert users["ana"].send("GET", attempts[0], "search").body == b"only search"  # the control


def _trace(user: User, workspace: str, experiment_id: str) -> dict:
    """A trace started through the v2 API (its payload lives in the artifact store)."""
    body = {"experiment_id": experiment_id, "timestamp_ms": 1, "request_metadata": [], "tags": []}
    started = user.send("POST", "/api/2.0/mlflow/traces", workspace, body=body)
    assert started.status == 200, started.text[:300]
    return started.json()["trace_info"]


def test_a_trace_cannot_be_pointed_at_another_teams_trace_payloads(
    users: dict[str, User], search_data: TeamData, ranking_data: TeamData
) -> None:
    ana, ben = users["ana"], users["ben"]
    secret = _trace(ana, "search", search_data.experiment_id)
    location = next(t["value"] for t in secret["tags"] if t["key"] == "mlflow.artifactLocation")
    attachment = str(uuid.uuid4())
    proxied = location.split("mlflow-artifacts:", 1)[1].lstrip("/")
    uploaded = ana.send(
        "PUT",
        f"/api/2.0/mlflow-artifacts/artifacts/{proxied}/attachments/{attachment}",
        "search",
        body=b"only search's trace",
    )
    assert uploaded.status == 200, uploaded.text
    read = f"/ajax-api/3.0/mlflow/get-trace-artifact?request_id={secret['request_id']}&path={attachment}"
    assert ana.send("GET", read, "search").body == b"only search's trace"  # the control

    mine = _trace(ben, "ranking", ranking_data.experiment_id)["request_id"]
    tag = {"key": "mlflow.artifactLocation", "value": location}
    for path in (f"/api/2.0/mlflow/traces/{mine}/tags", f"/api/3.0/mlflow/traces/{mine}/tags"):
        answer = ben.send("PATCH", path, "ranking", body=tag)
        assert answer.status in (400, 403), f"{path}: {answer.status} {answer.text[:200]}"
    started = ben.send(
        "POST",
        "/api/2.0/mlflow/traces",
        "ranking",
        body={"experiment_id": ranking_data.experiment_id, "timestamp_ms": 1, "tags": [tag]},
    )
    assert started.status in (400, 403), started.text[:200]
    stolen = ben.send("GET", f"/ajax-api/3.0/mlflow/get-trace-artifact?request_id={mine}&path={attachment}", "ranking")
    assert stolen.status != 200 and b"only search" not in stolen.body


def test_a_default_workspace_source_names_only_experiments_one_may_read(
    platform: LocalPlatform, users: dict[str, User], search_data: TeamData
) -> None:
    """In `default` the legacy layout is outside workspaces/; the originals of experiments moved into a
    team stay there. A raw source must name an experiment the caller may read."""
    admin, ben = users["admin"], users["ben"]
    model = f"legacy-{secrets.token_hex(3)}"
    assert admin.send("POST", "/api/2.0/mlflow/registered-models/create", "default", body={"name": model}).status == 200
    grant = {"username": "ben", "resource_type": "registered_model", "resource_id": model, "permission": "EDIT"}
    assert admin.send("POST", "/api/3.0/mlflow/users/permissions/grant", "default", body=grant).status == 200
    moved = f"{_root(platform)}/{search_data.experiment_id}/{search_data.run_id}/artifacts"
    answer = ben.send("POST", VERSION_CREATE, "default", body={"name": model, "source": moved})
    assert answer.status in (400, 403), f"{answer.status} {answer.text[:200]}"
    own = admin.send("POST", "/api/2.0/mlflow/experiments/create", "default", body={"name": f"/legacy/{model}"})
    readable = {
        "username": "ben",
        "resource_type": "experiment",
        "resource_id": own.json()["experiment_id"],
        "permission": "READ",
    }
    assert admin.send("POST", "/api/3.0/mlflow/users/permissions/grant", "default", body=readable).status == 200
    source = f"{_root(platform)}/{own.json()['experiment_id']}/x/artifacts"
    assert ben.send("POST", VERSION_CREATE, "default", body={"name": model, "source": source}).status == 200  # control
