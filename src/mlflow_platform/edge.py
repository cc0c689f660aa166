"""The one edge in front of both MLflow halves: it owns authentication for the whole server.

Before any MLflow code sees a request, the edge
- refuses a request whose path a forwarder header rewrote (``SCRIPT_NAME``, ``PATH_INFO``): MLflow's
  FastAPI middleware authorizes on ``SCRIPT_NAME + PATH_INFO`` while Starlette routes on
  ``PATH_INFO``, so any rewrite lets one route pass for another;
- finds the route in the route table (``routes.RouteTable``), which also decides the half;
- lets only the exact public routes through without a login;
- authenticates everything else (basic auth through MLflow's credential cache, or the ALB's
  verified identity header) and refuses admin-only and unclassified routes to non-admins.

MLflow's own checks still run behind it, unchanged: the edge only ever refuses more.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gunicorn.util import unquote_to_wsgi_str

from . import sso
from .alb_identity import VERIFIED_SSO_USER
from .routes import Access, Route, RouteTable

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


@dataclass(frozen=True)
class Caller:
    username: str
    is_admin: bool


def _answer(start_response: Callable, status: str, message: str, headers: tuple = ()) -> list[bytes]:
    code = status.split()[0]
    error = {"400": "BAD_REQUEST", "401": "UNAUTHENTICATED", "403": "PERMISSION_DENIED"}.get(code, "ERROR")
    body = json.dumps({"error_code": error, "message": message}).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers])
    return [body]


def rewritten_path(environ: dict) -> bool:
    """Whether anything but the request line decided the path the apps will route on."""
    if environ.get("SCRIPT_NAME"):
        return True
    raw = environ.get("RAW_URI")  # gunicorn's request-line target; other servers may not set it
    if not raw or not raw.startswith("/"):
        return False
    return unquote_to_wsgi_str(raw.split("?", 1)[0]) != environ.get("PATH_INFO", "")


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        username, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (username, password) if sep else None


def authenticate_basic(environ: dict, path: str, *, gateway_header: bool = True) -> Caller | None:
    """MLflow's basic auth, as its FastAPI half does it: on ``/gateway/`` routes the gateway's own
    credential header (only with MLflow's default authorization function: a custom one, SSO's, gets
    ``Authorization`` alone) and the internal token job subprocesses use there; MLflow's credential
    cache, so a request pays PBKDF2 at most once per ``auth_cache_ttl_seconds``."""
    from mlflow.environment_variables import _MLFLOW_INTERNAL_GATEWAY_AUTH_TOKEN
    from mlflow.exceptions import MlflowException
    from mlflow.server import auth

    gateway = gateway_header and path.startswith("/gateway/")
    header = (environ.get("HTTP_X_MLFLOW_AUTHORIZATION") if gateway else None) or environ.get("HTTP_AUTHORIZATION")
    credentials = _basic_credentials(header)
    if credentials is None:
        return None
    username, password = credentials
    token = _MLFLOW_INTERNAL_GATEWAY_AUTH_TOKEN.get()
    if gateway and token and secrets.compare_digest(password, token):
        try:
            user = auth.store.get_user(username)
        except MlflowException:  # no such user
            return None
    else:
        user = auth._authenticate_cached(username, password)
    return Caller(user.username, bool(user.is_admin)) if user is not None else None


class Edge:
    def __init__(self, routes: RouteTable, flask: WSGIApp, fastapi: WSGIApp, sso_settings=None):
        self.routes, self.flask, self.fastapi, self.sso = routes, flask, fastapi, sso_settings

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if rewritten_path(environ):
            return _answer(start_response, "400 Bad Request", "forwarder headers may not rewrite the request path")
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/")
        route = self.routes.lookup(method, path)
        if route is not None and route.access is Access.PUBLIC:
            return self._serve(route, environ, start_response)
        caller = self._authenticate(environ, path)
        if isinstance(caller, str):
            return _answer(start_response, "401 Unauthorized", f"single sign-on refused: {caller}")
        if caller is None:
            return _answer(
                start_response,
                "401 Unauthorized",
                "You are not authenticated: send basic-auth credentials (or sign in through the load balancer).",
                (("WWW-Authenticate", 'Basic realm="mlflow"'),),
            )
        if route is not None and route.access in (Access.ADMIN, Access.UNCLASSIFIED) and not caller.is_admin:
            return _answer(start_response, "403 Forbidden", f"Permission denied: {route.reason}.")
        return self._serve(route, environ, start_response)

    def _serve(self, route: Route | None, environ: dict, start_response: Callable) -> Iterable[bytes]:
        half = self.fastapi if route is not None and route.half == "fastapi" else self.flask
        return half(environ, start_response)

    def _authenticate(self, environ: dict, path: str) -> Caller | str | None:
        """The caller, None without valid credentials, or why an identity header was refused."""
        if self.sso is not None and "HTTP_X_AMZN_OIDC_DATA" in environ:
            try:
                username, is_admin = sso.identify(environ["HTTP_X_AMZN_OIDC_DATA"], path)
            except sso.IdentityRejected as exc:
                return str(exc)
            environ[VERIFIED_SSO_USER] = username
            return Caller(username, is_admin)
        return authenticate_basic(environ, path, gateway_header=self.sso is None)
