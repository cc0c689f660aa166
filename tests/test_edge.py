"""The edge in front of MLflow's two halves, with stand-in halves: what it refuses before either
half runs, and which half it hands a request to."""

from __future__ import annotations

import pytest

from mlflow_platform import edge as edge_module
from mlflow_platform.edge import Caller, Edge, rewritten_path
from mlflow_platform.routes import Access, Route

ROUTES = {
    ("GET", "/health"): Route("flask", "GET", "/health", Access.PUBLIC, "ours"),
    ("POST", "/v1/traces"): Route("fastapi", "POST", "/v1/traces", Access.CHECKED, "otel"),
    ("GET", "/new/open-route"): Route("flask", "GET", "/new/open-route", Access.UNCLASSIFIED, "not reviewed"),
    ("POST", "/ajax-api/3.0/jobs/"): Route("fastapi", "POST", "/ajax-api/3.0/jobs/", Access.ADMIN, "jobs"),
}


class _Table:
    def lookup(self, method: str, path: str) -> Route | None:
        return ROUTES.get((method, path))


def _half(name: str):
    def app(environ, start_response):
        start_response("200 OK", [])
        return [name.encode()]

    return app


def _call(edge: Edge, method: str, path: str, **environ) -> tuple[str, bytes, dict]:
    seen: dict = {}

    def start_response(status, headers):
        seen.update(status=status, headers=dict(headers))

    body = b"".join(edge({"REQUEST_METHOD": method, "PATH_INFO": path, **environ}, start_response))
    return seen["status"], body, seen["headers"]


@pytest.fixture
def edge(monkeypatch: pytest.MonkeyPatch) -> Edge:
    users = {"Basic admin": Caller("admin", True), "Basic ana": Caller("ana", False)}
    monkeypatch.setattr(
        edge_module, "authenticate_basic", lambda environ, path, **_: users.get(environ.get("HTTP_AUTHORIZATION"))
    )
    return Edge(_Table(), _half("flask"), _half("fastapi"))  # type: ignore[arg-type]


def test_public_routes_need_no_login_and_everything_else_does(edge: Edge) -> None:
    assert _call(edge, "GET", "/health")[:2] == ("200 OK", b"flask")
    status, _, headers = _call(edge, "POST", "/v1/traces")
    assert status.startswith("401") and headers["WWW-Authenticate"] == 'Basic realm="mlflow"'
    assert _call(edge, "GET", "/no/such/route")[0].startswith("401")  # even a 404 needs a login first
    assert _call(edge, "POST", "/v1/traces", HTTP_AUTHORIZATION="Basic ana")[:2] == ("200 OK", b"fastapi")
    assert _call(edge, "GET", "/no/such/route", HTTP_AUTHORIZATION="Basic ana")[:2] == ("200 OK", b"flask")


@pytest.mark.parametrize("path", ["/new/open-route", "/ajax-api/3.0/jobs/"])
def test_unclassified_and_admin_routes_are_for_admins(edge: Edge, path: str) -> None:
    method = "GET" if path.startswith("/new") else "POST"
    assert _call(edge, method, path, HTTP_AUTHORIZATION="Basic ana")[0].startswith("403")
    assert _call(edge, method, path, HTTP_AUTHORIZATION="Basic admin")[0] == "200 OK"


def test_a_rewritten_path_is_refused_before_anything_else(edge: Edge) -> None:
    assert _call(edge, "GET", "/health", SCRIPT_NAME="/x")[0].startswith("400")
    assert _call(edge, "GET", "/health", RAW_URI="/health/../v1/traces")[0].startswith("400")
    assert _call(edge, "GET", "/health", RAW_URI="/health?x=1")[0] == "200 OK"


@pytest.mark.parametrize(
    ("environ", "rewritten"),
    [
        ({"PATH_INFO": "/a b", "RAW_URI": "/a%20b?q"}, False),  # gunicorn unquotes the target
        ({"PATH_INFO": "/api/x", "RAW_URI": "/health/api/x", "SCRIPT_NAME": "/health"}, True),
        ({"PATH_INFO": "/api/x", "RAW_URI": "/health/api/x"}, True),  # PATH_INFO from a header
        ({"PATH_INFO": "/api/x"}, False),  # a server that records no request target
        ({"PATH_INFO": "/api/x", "RAW_URI": "http://host/api/x"}, False),  # absolute form
    ],
)
def test_rewritten_path(environ: dict, rewritten: bool) -> None:
    assert rewritten_path(environ) is rewritten
