"""The tracking server's application: all of MLflow 3's server surface under gunicorn's gthread workers.

Under gunicorn, MLflow serves only its Flask app; the routes that exist only in its FastAPI app
(OTLP trace ingestion at ``/v1/traces``, the job API, the AI Gateway's database-backed endpoints,
the Assistant, MCP) answer 404. Serving everything through FastAPI instead costs the tracking
operations half their throughput (the load benchmark's uvicorn variant): every Flask request then
crosses a WSGI bridge onto a thread pool.

So the app is MLflow's two halves behind one edge (``edge.Edge``): the route table decides which
half serves a request (FastAPI for its own routes, through a2wsgi with MLflow's FastAPI permission
middleware; Flask with basic auth for everything else, the artifact proxy included), and the edge
authenticates every request but the exact public routes before either half sees it. Flask then
runs MLflow's authorization and our ``request_guards``.

``mlflow server --app-name platform-auth`` loads ``create_app`` through the ``mlflow.app`` entry point.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


def create_app() -> WSGIApp:
    """Basic auth on both halves (Flask's before-request hooks, MLflow's FastAPI middleware), behind the edge."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from a2wsgi import ASGIMiddleware
        from mlflow.server import app as flask_app
        from mlflow.server.auth import add_fastapi_permission_middleware
        from mlflow.server.auth import create_app as create_auth_app
        from mlflow.server.fastapi_app import create_fastapi_app

    from . import auth_lookups, history_pages, request_guards, sso
    from .edge import Edge
    from .observability import WORKER_THREADS_ENV, metered
    from .routes import RouteTable

    authenticated = create_auth_app(flask_app)
    if not hasattr(authenticated, "url_map"):
        raise RuntimeError("MLflow composed its FastAPI app itself (uvicorn): run the server under gunicorn")
    _cache_auth_reads()
    _route_replica_reads()
    auth_lookups.install()
    request_guards.install(authenticated)
    fastapi_app = create_fastapi_app(authenticated)
    add_fastapi_permission_middleware(fastapi_app)
    edge = Edge(RouteTable(authenticated, fastapi_app), authenticated, ASGIMiddleware(fastapi_app), sso.settings())
    served = history_pages.from_environment(_sso_edge(edge))
    if threads := os.environ.get(WORKER_THREADS_ENV):  # rendered with server.prometheus
        served = metered(served, edge.routes, int(threads))
    served.fastapi_app = fastapi_app  # type: ignore[attr-defined]
    served.routes = edge.routes  # type: ignore[attr-defined]
    return served


def _cache_auth_reads() -> None:
    """Users, roles and grants from a per-worker cache (permission_cache.py; rendered TTL, 0 = off),
    its hit rate counted when the server exports metrics; with workspaces on, a reading request's
    workspace for the same TTL (workspace_memo.py, not counted in that hit rate)."""
    from mlflow.server import auth

    from . import workspace_memo
    from .observability import WORKER_THREADS_ENV, permission_cache_counter
    from .permission_cache import TTL_ENV, install

    record = permission_cache_counter() if os.environ.get(WORKER_THREADS_ENV) else None
    ttl = float(os.environ.get(TTL_ENV) or 0)
    install(auth.store, ttl, record)
    workspace_memo.install_on_server(ttl)


def _route_replica_reads() -> None:
    """With a read replica: searches and metric histories from it, the rest from the primary
    (replica_reads.py); its failures, sent to the primary, counted when the server exports metrics."""
    from . import replica_reads
    from .observability import WORKER_THREADS_ENV, replica_fallback_counter

    replica_reads.install(replica_fallback_counter() if os.environ.get(WORKER_THREADS_ENV) else None)


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
