"""Every route of the pinned MLflow release has an access class, and dispatch is decided by the
route tables alone (item 6). Built in a fresh interpreter, as a server worker builds it: MLflow's
auth module reads its config and registers its routes on import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mlflow_platform import routes
from mlflow_platform.routes import Access

BUILD = """
import json, sys, warnings
warnings.simplefilter("ignore")
from mlflow_platform.server_app import create_app
app = create_app()
table = app.routes
lookups = [[m, p, (lambda r: r and [r.half, r.access.value])(table.lookup(m, p))] for m, p in json.load(sys.stdin)]
print(json.dumps({"routes": [[r.half, r.method, r.template, r.access.value, r.reason] for r in table.routes],
                  "lookups": lookups}))
"""

# In this order: the artifact routes first with an empty path (which Flask does not serve), then
# with a real one. A per-worker cache of the first decision sent the second to FastAPI.
LOOKUPS = [
    ("GET", "/api/2.0/mlflow-artifacts/artifacts/"),
    ("PUT", "/api/2.0/mlflow-artifacts/artifacts/"),
    ("GET", "/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/x.bin"),
    ("PUT", "/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/x.bin"),
    ("POST", "/v1/traces"),
    ("POST", "/ajax-api/3.0/jobs/search"),
    ("POST", "/ajax-api/3.0/jobs/"),
    ("GET", "/ajax-api/3.0/mlflow/assistant/config"),
    ("GET", "/api/3.0/mlflow/mcp-servers"),
    ("GET", "/api/3.0/mlflow/server-info"),
    ("POST", "/gateway/my-endpoint/mlflow/invocations"),
    ("POST", "/api/2.0/mlflow/runs/log-metric"),
    ("GET", "/api/2.0/mlflow/registered-models/alias"),
    ("GET", "/health"),
    ("HEAD", "/health"),
    ("GET", "/healthz"),
    ("GET", "/v1/traces"),
    ("GET", "/"),
    ("GET", "/metrics"),
]


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("routes")
    ini = work / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{work / 'auth.db'}\nadmin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(work),
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "x" * 32,
        "MLFLOW_AUTH_ADMIN_PASSWORD": "y" * 16,
        "PROMETHEUS_MULTIPROC_DIR": str(work / "metrics"),
        "prometheus_multiproc_dir": str(work / "metrics"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    from mlflow.server.constants import PROMETHEUS_EXPORTER_ENV_VAR

    env[PROMETHEUS_EXPORTER_ENV_VAR] = str(work / "metrics")  # serves /metrics, as rendered
    built = subprocess.run(
        [sys.executable, "-c", BUILD],
        input=json.dumps(LOOKUPS),
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    return json.loads(built.stdout.strip().splitlines()[-1])


def test_every_route_of_the_pinned_release_is_classified(table: dict) -> None:
    unclassified = [r for r in table["routes"] if r[3] == Access.UNCLASSIFIED]
    assert unclassified == [], "review these routes into routes.py (or leave them to admins on purpose)"
    assert len(table["routes"]) > 500  # Flask's url_map and FastAPI's own routes were both read
    assert {r[0] for r in table["routes"]} == {"flask", "fastapi"}


def test_only_our_exact_routes_are_public(table: dict) -> None:
    public = {(r[1], r[2]) for r in table["routes"] if r[3] == Access.PUBLIC}
    assert public == {("GET", "/health"), ("GET", "/static-files/<path:path>")}


def test_what_changes_the_server_for_everyone_is_for_admins(table: dict) -> None:
    access = {(r[1], r[2]): r[3] for r in table["routes"]}
    for key in [
        ("POST", "/ajax-api/3.0/mlflow/demo/generate"),
        ("POST", "/ajax-api/3.0/jobs/"),
        ("PUT", "/ajax-api/3.0/mlflow/assistant/config"),
        ("POST", "/ajax-api/3.0/mlflow/assistant/skills/install"),
        ("POST", "/ajax-api/3.0/mlflow/assistant/message"),
        ("GET", "/metrics"),
    ]:
        assert access[key] == Access.ADMIN, key
    assert access["POST", "/v1/traces"] == Access.CHECKED  # MLflow's OTLP validator: CREATE on the experiment


def test_dispatch_depends_on_the_route_alone(table: dict) -> None:
    got = {(m, p): found for m, p, found in table["lookups"]}
    assert got["GET", "/api/2.0/mlflow-artifacts/artifacts/"] is None  # no route: nothing but a 404
    for method in ("GET", "PUT"):
        assert got[method, "/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/x.bin"] == ["flask", "checked"]
    assert got["POST", "/v1/traces"] == ["fastapi", "checked"]
    assert got["POST", "/ajax-api/3.0/jobs/search"] == ["fastapi", "filtered"]
    assert got["POST", "/ajax-api/3.0/jobs/"] == ["fastapi", "admin"]
    assert got["GET", "/ajax-api/3.0/mlflow/assistant/config"] == ["fastapi", "signed-in"]  # the UI reads it
    assert got["GET", "/api/3.0/mlflow/mcp-servers"] == ["fastapi", "checked"]
    assert got["GET", "/api/3.0/mlflow/server-info"] == ["flask", "signed-in"]  # Flask serves it too
    assert got["POST", "/gateway/my-endpoint/mlflow/invocations"] == ["fastapi", "checked"]
    assert got["POST", "/api/2.0/mlflow/runs/log-metric"] == ["flask", "checked"]
    assert got["GET", "/api/2.0/mlflow/registered-models/alias"] == ["flask", "checked"]
    assert got["GET", "/health"] == got["HEAD", "/health"] == ["flask", "public"]
    assert got["GET", "/healthz"] is None and got["GET", "/v1/traces"] is None
    assert got["GET", "/"] == ["flask", "signed-in"]
    assert got["GET", "/metrics"] == ["flask", "admin"]


def test_a_route_mlflow_opens_to_anyone_signed_in_stays_closed_until_reviewed() -> None:
    """What a new MLflow release's open route gets: refused to non-admins (see tests/test_edge.py)."""

    def _allow_authenticated():
        return True

    assert routes._verdict(_allow_authenticated)[0] == Access.UNCLASSIFIED
    assert routes._verdict(lambda: True)[0] == Access.UNCLASSIFIED

    def validate_can_read_experiment():
        return True

    assert routes._verdict(validate_can_read_experiment)[0] == Access.CHECKED


def test_templates_become_concrete_paths() -> None:
    assert routes.sample_path("/a/<path:p>/<int(signed=True):n>/{x}/{y:path}") == "/a/a/b/1/1/a/b"


def test_every_route_falls_in_a_group_the_dashboard_and_alerts_show(table: dict) -> None:
    """observability.route_group over MLflow's own routes: nothing lands in a group the dashboard
    does not draw, and the groups the guide's alerts are about get the routes that belong to them."""
    from types import SimpleNamespace

    from mlflow_platform.observability import GROUPS, route_group

    grouped = {(m, t): route_group(m, SimpleNamespace(template=t)) for _, m, t, *_ in table["routes"]}
    assert set(grouped.values()) <= set(GROUPS) - {"unmatched"}
    expected = {
        ("POST", "/api/2.0/mlflow/runs/log-batch"): "tracking-write",
        ("GET", "/api/2.0/mlflow/runs/get"): "tracking-read",
        ("POST", "/api/2.0/mlflow/runs/search"): "search",
        ("POST", "/api/2.0/mlflow/experiments/search"): "search",
        ("GET", "/api/2.0/mlflow/registered-models/alias"): "registry",
        ("POST", "/api/2.0/mlflow/model-versions/create"): "registry",
        ("PUT", "/api/2.0/mlflow-artifacts/artifacts/<path:artifact_path>"): "artifacts",
        ("POST", "/v1/traces"): "otlp",
        ("GET", "/static-files/<path:path>"): "ui",
    }
    assert {key: grouped.get(key) for key in expected} == expected
    assert route_group("GET", None) == "unmatched"
