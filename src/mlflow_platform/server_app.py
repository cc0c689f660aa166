"""The tracking server's application: all of MLflow 3's server surface under gunicorn's gthread workers.

Under gunicorn, MLflow serves only its Flask app; the routes that exist only in its FastAPI app
(OTLP trace ingestion at ``/v1/traces``, the job API, the AI Gateway's database-backed endpoints,
the Assistant, MCP, server info) answer 404. Serving everything through FastAPI instead costs the
tracking operations half their throughput (the load benchmark's uvicorn variant): every Flask
request then crosses a WSGI bridge onto a thread pool.

So this app dispatches by path: a request for one of FastAPI's own routes goes to MLflow's FastAPI
app (through a2wsgi's ASGI-to-WSGI adapter, with MLflow's FastAPI permission middleware), anything
else goes straight to the Flask app with basic auth, exactly as before. Native routes that Flask
also serves (the artifact proxy) stay on Flask.

``mlflow server --app-name platform-auth`` loads ``create_app`` through the ``mlflow.app`` entry point.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

from starlette.routing import Match, Mount

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


SERVER_INFO = "/mlflow/server-info"


def native_route_matcher(fastapi_app, flask_app) -> Callable[[str, str], bool]:
    """(method, path) -> whether FastAPI serves it natively and Flask does not.

    Cheap on the hot path: a path outside every native route's literal prefix (all tracking
    calls) is decided by one ``str.startswith``; the rest is matched against the route table,
    and whether Flask serves the same route is decided once per route."""
    routes = [r for r in fastapi_app.router.routes if not isinstance(r, Mount)]
    prefixes = tuple(sorted({_literal_prefix(p) for p in _route_paths(routes)}))
    flask_urls = flask_app.url_map.bind("localhost")
    decided: dict[tuple[int, str], bool] = {}

    def flask_serves(path: str, method: str) -> bool:
        try:
            flask_urls.match(path, method=method)
        except Exception:  # werkzeug's NotFound / MethodNotAllowed / RequestRedirect
            return False
        return True

    def native(method: str, path: str) -> bool:
        if not path.startswith(prefixes):
            return False
        scope = {"type": "http", "path": path, "method": method, "root_path": ""}
        route = next((r for r in routes if r.matches(scope)[0] == Match.FULL), None)
        if route is None:
            return False
        key = (id(route), method)
        if key not in decided:
            decided[key] = not flask_serves(path, method)
        return decided[key]

    return native


def _route_paths(routes) -> list[str]:
    """Path templates of FastAPI routes, also inside included routers (whose include prefix is
    kept apart from their routes). An unknown shape yields "", which only costs speed: every
    request is then matched against the table."""
    paths = []
    for route in routes:
        if hasattr(route, "path"):
            paths.append(route.path)
        elif hasattr(route, "original_router"):
            prefix = getattr(getattr(route, "include_context", None), "prefix", "") or ""
            paths += [prefix + path for path in _route_paths(route.original_router.routes)]
        else:
            paths.append("")
    return paths


def _literal_prefix(template: str) -> str:
    return template.split("{", 1)[0]


def _require_login_for_server_info() -> None:
    """MLflow serves /mlflow/server-info without login ("public capability discovery"); here every
    route but /health and the UI's static files needs credentials, so it is taken off that list.
    Any signed-in user may still read it: MLflow's client asks it before every call in a
    workspace, and MLflow's fail-closed net would otherwise refuse a route with no validator to
    every non-admin. Loud if MLflow renames these lists, so an upgrade cannot silently change it."""
    from mlflow.server import auth

    names = ("_PUBLIC_ROUTE_SUFFIXES", "_HANDLER_INTERNAL_AUTHZ_SUFFIXES", "_KNOWN_UNGATED_FASTAPI_ROUTE_MARKERS")
    if missing := [name for name in names if not hasattr(auth, name)]:
        raise RuntimeError(f"mlflow.server.auth.{missing[0]} is gone: re-check which routes MLflow leaves public")
    if SERVER_INFO not in auth._PUBLIC_ROUTE_SUFFIXES:
        return  # already applied in this process
    auth._PUBLIC_ROUTE_SUFFIXES = tuple(s for s in auth._PUBLIC_ROUTE_SUFFIXES if s != SERVER_INFO)
    auth._HANDLER_INTERNAL_AUTHZ_SUFFIXES = (*auth._HANDLER_INTERNAL_AUTHZ_SUFFIXES, SERVER_INFO)
    auth._KNOWN_UNGATED_FASTAPI_ROUTE_MARKERS = (*auth._KNOWN_UNGATED_FASTAPI_ROUTE_MARKERS, SERVER_INFO)


def create_app() -> WSGIApp:
    """Basic auth on both halves: Flask's before-request hooks and MLflow's FastAPI middleware."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from a2wsgi import ASGIMiddleware
        from mlflow.server import app as flask_app
        from mlflow.server.auth import add_fastapi_permission_middleware
        from mlflow.server.auth import create_app as create_auth_app
        from mlflow.server.fastapi_app import create_fastapi_app

    _require_login_for_server_info()
    authenticated = create_auth_app(flask_app)
    if not hasattr(authenticated, "url_map"):
        # Under uvicorn, MLflow already composed its FastAPI app with basic auth: serve that.
        return authenticated
    fastapi_app = create_fastapi_app(authenticated)
    add_fastapi_permission_middleware(fastapi_app)
    native = native_route_matcher(fastapi_app, authenticated)
    bridged = ASGIMiddleware(fastapi_app)

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if native(environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/")):
            return bridged(environ, start_response)
        return authenticated(environ, start_response)

    served = _sso_edge(app)
    served.fastapi_app = fastapi_app  # type: ignore[attr-defined]
    return served


def _sso_edge(app: WSGIApp) -> WSGIApp:
    """With SSO on: the ALB's identity header is refused from any peer but the ALB's subnets (both
    MLflow halves see the request only after this), and /platform/logout ends the ALB session."""
    from . import sso

    settings = sso.settings()
    if settings is None:
        return app

    def edge(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == sso.LOGOUT_PATH:
            return sso.logout_response(environ, start_response)
        if "HTTP_X_AMZN_OIDC_DATA" in environ and not settings.from_trusted_peer(environ.get("REMOTE_ADDR")):
            return sso.refuse_untrusted_peer(environ, start_response)
        return app(environ, start_response)

    return edge
