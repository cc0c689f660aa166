"""Every route the tracking server serves, which of MLflow's two halves serves it, and who may call it.

The table is built from the apps themselves (Flask's ``url_map`` and FastAPI's routes) when a worker
starts, so it is exactly what this MLflow release serves. Each route gets one access class:

- ``public``: no login; an exact, short list of our own (the health check, the UI's static files);
- ``signed-in``: any authenticated user; a list of our own, reviewed route by route;
- ``checked``: MLflow's own permission validator for the route decides;
- ``filtered``: MLflow's handler or response filter narrows the answer to what the caller may see;
- ``admin``: server admins only, by our decision (the route changes the server for everyone, or
  writes into a workspace without any permission check);
- ``unclassified``: none of the above, so refused to everyone but admins.

A route MLflow opens to any signed-in user without a validator of its own (``_allow_authenticated``,
the Assistant's "require authentication") is ``unclassified`` until it is reviewed into one of our
lists: a new MLflow release therefore cannot open a door silently. ``tests/security`` asserts that
no route of the pinned release is left unclassified.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from types import SimpleNamespace

from starlette.routing import Mount, compile_path


class Access(StrEnum):
    PUBLIC = "public"
    SIGNED_IN = "signed-in"
    CHECKED = "checked"
    FILTERED = "filtered"
    ADMIN = "admin"
    UNCLASSIFIED = "unclassified"


#: The only routes that answer without a login (exact templates, never prefixes).
PUBLIC = frozenset({("GET", "/health"), ("GET", "/static-files/<path:path>")})

#: Reviewed: any signed-in user may call these. They carry no tenant data or only the caller's own.
SIGNED_IN = frozenset(
    {
        ("GET", "/"),  # the UI's index.html
        ("GET", "/version"),
        ("GET", "/api/3.0/mlflow/server-info"),  # MLflow's client asks it before each call in a workspace
        ("GET", "/ajax-api/3.0/mlflow/server-info"),
        ("GET", "/ajax-api/3.0/mlflow/ui-telemetry"),  # the UI's telemetry switch (off unless opted in)
        ("POST", "/ajax-api/3.0/mlflow/ui-telemetry"),
        ("GET", "/api/2.0/mlflow/users/current"),
        ("GET", "/ajax-api/2.0/mlflow/users/current"),
        ("GET", "/api/3.0/mlflow/users/current/permissions"),
        ("GET", "/ajax-api/3.0/mlflow/users/current/permissions"),
        # The UI asks these on every page; MLflow strips API keys and project locations for callers
        # that are not on the server's own host. Everything else of the Assistant is for admins.
        ("GET", "/ajax-api/3.0/mlflow/assistant/config"),
        ("GET", "/ajax-api/3.0/mlflow/assistant/providers"),
        # The AI Gateway's static catalogue (providers, models, the secret form's fields).
        ("GET", "/ajax-api/3.0/mlflow/gateway/supported-providers"),
        ("GET", "/ajax-api/3.0/mlflow/gateway/supported-models"),
        ("GET", "/ajax-api/3.0/mlflow/gateway/provider-config"),
        ("GET", "/ajax-api/3.0/mlflow/gateway/secrets/config"),
    }
)

#: MLflow narrows the answer to the caller's own (here: its own jobs).
FILTERED = frozenset(
    {
        ("POST", "/ajax-api/3.0/jobs/search"),  # the caller's own jobs
        ("GET", "/gateway/mlflow/v1/models"),  # the gateway endpoints the caller may use
    }
)

#: Server admins only, by our decision. Routes MLflow lets any signed-in user call that change the
#: server for everyone, run code as the server, or write into any workspace without a permission;
#: and routes MLflow has no validator for (its fail-closed net already refuses them to non-admins).
ADMIN = {
    ("POST", "/ajax-api/3.0/mlflow/demo/generate"): "writes demo data into any workspace without a permission",
    ("POST", "/ajax-api/3.0/jobs/"): "a job runs code as the server, against any experiment it names",
    ("GET", "/metrics"): "Prometheus scrapes as the ops user, an admin",
    **{
        ("GET", f"/{api}/3.0/mlflow/gateway/budgets/{what}"): "budget policies of any workspace name users and spend"
        for api in ("api", "ajax-api")
        for what in ("get", "list", "windows")
    },
    ("GET", "/build/<path:filename>"): "Flask's default static route; the UI loads from /static-files",
    ("POST", "/api/2.0/mlflow/users/create-ui"): "MLflow's sign-up form; users are created by the admin",
    **{
        (m, f"/{api}/3.0/mlflow/workspaces/<workspace_name>"): "workspace management is the server admin's"
        for m in ("GET", "PATCH", "DELETE")
        for api in ("api", "ajax-api")
    },
    **{
        (m, f"/{api}/3.0/mlflow/prompt-optimization/jobs/<job_id>{tail}"): "MLflow has no validator for it"
        for m, tail in (("GET", ""), ("DELETE", ""), ("POST", "/cancel"))
        for api in ("api", "ajax-api")
    },
    **{
        (m, f"/{api}{path}"): "MLflow answers 501 (not implemented)"
        for m, path in (
            ("POST", "/2.0mlflow/experiments/search-datasets"),
            ("GET", "/2.0/mlflow/unified-traces"),
            ("GET", "/2.0/mlflow/get-online-trace-details"),
        )
        for api in ("api", "ajax-api")
    },
}
#: The Assistant runs an agent as the server and installs skills into its home directory.
ADMIN_PREFIXES = ("/ajax-api/3.0/mlflow/assistant",)

#: MLflow validators that decide nothing: the route needs our review before anyone but admins may call it.
_UNREVIEWED_VALIDATORS = ("_allow_authenticated", "<lambda>", "_get_require_authentication_validator")


@dataclass(frozen=True)
class Route:
    half: str  # "flask" or "fastapi"
    method: str
    template: str
    access: Access
    reason: str


def sample_path(template: str) -> str:
    """A concrete path for a route template (Flask ``<conv:name>`` or Starlette ``{name:conv}``)."""
    flask = re.sub(r"<(?:(\w+)(?:\([^)]*\))?:)?\w+>", lambda m: "a/b" if m.group(1) == "path" else "1", template)
    return re.sub(r"\{\w+(?::(\w+))?\}", lambda m: "a/b" if m.group(1) == "path" else "1", flask)


def _policy(method: str, template: str) -> tuple[Access, str] | None:
    if (method, template) in PUBLIC:
        return Access.PUBLIC, "our public list"
    if (method, template) in SIGNED_IN:  # exact entries before the admin-only prefixes
        return Access.SIGNED_IN, "our reviewed list"
    if (method, template) in ADMIN:
        return Access.ADMIN, f"admins only: {ADMIN[method, template]}"
    if template.startswith(ADMIN_PREFIXES):
        return Access.ADMIN, "admins only: the Assistant runs an agent as the server"
    if (method, template) in FILTERED:
        return Access.FILTERED, "MLflow filters the answer to the caller's own"
    return None


def _verdict(validator) -> tuple[Access, str]:
    name = getattr(validator, "__qualname__", repr(validator))
    if any(unreviewed in name for unreviewed in _UNREVIEWED_VALIDATORS):
        return Access.UNCLASSIFIED, f"MLflow lets any signed-in user call it ({name}); not reviewed"
    return Access.CHECKED, name


def classify_flask(method: str, template: str) -> tuple[Access, str]:
    from mlflow.server import auth

    if found := _policy(method, template):
        return found
    request = SimpleNamespace(path=sample_path(template), method=method)
    if validator := auth._find_validator(request):
        return _verdict(validator)
    if auth._is_proxy_artifact_path(request.path):
        return Access.CHECKED, "MLflow's artifact-proxy validators"
    if auth._authorized_outside_before_request(request):
        return Access.FILTERED, "MLflow authorizes it in the handler or a response filter"
    return Access.UNCLASSIFIED, "no validator in MLflow"


def classify_fastapi(method: str, template: str) -> tuple[Access, str]:
    from mlflow.server import auth

    if found := _policy(method, template):
        return found
    if validator := auth._find_fastapi_validator(sample_path(template), method):
        return _verdict(validator)
    return Access.UNCLASSIFIED, "no validator in MLflow's FastAPI middleware"


def _fastapi_routes(routes: Iterable, prefix: str = "") -> list[tuple[str, object]]:
    """(path template, route) of FastAPI routes, also inside included routers."""
    found = []
    for route in routes:
        if isinstance(route, Mount):
            continue
        if hasattr(route, "path"):
            found.append((prefix + route.path, route))
        elif hasattr(route, "original_router"):
            inner = getattr(getattr(route, "include_context", None), "prefix", "") or ""
            found += _fastapi_routes(route.original_router.routes, prefix + inner)
        else:
            raise RuntimeError(f"unknown FastAPI route shape {route!r}: re-check how MLflow composes its app")
    return found


def _as_flask_template(template: str) -> str:
    return re.sub(
        r"\{(\w+)(?::(\w+))?\}", lambda m: f"<{'path:' if m.group(2) == 'path' else ''}{m.group(1)}>", template
    )


class RouteTable:
    """(method, path) -> the Route that serves it, decided from the two route tables alone."""

    def __init__(self, flask_app, fastapi_app):
        self._flask_urls = flask_app.url_map.bind("localhost")
        flask_keys = {
            (m, rule.rule) for rule in flask_app.url_map.iter_rules() for m in rule.methods - {"HEAD", "OPTIONS"}
        }
        self.flask = {
            (m, rule.rule): Route("flask", m, rule.rule, *classify_flask(m, rule.rule))
            for rule in flask_app.url_map.iter_rules()
            for m in sorted(rule.methods - {"HEAD", "OPTIONS"})
        }
        #: Matched on the full template (a route inside an included router matches only its own tail).
        self.fastapi: list[tuple[re.Pattern, Route]] = []
        for template, route in _fastapi_routes(fastapi_app.router.routes):
            for method in sorted(getattr(route, "methods", None) or ()):
                if method == "HEAD" or (method, _as_flask_template(template)) in flask_keys:
                    continue  # Flask serves the same route: it stays on Flask, whatever the path
                entry = Route("fastapi", method, template, *classify_fastapi(method, template))
                self.fastapi.append((compile_path(template)[0], entry))
        self._prefixes = tuple(sorted({r.template.split("{", 1)[0] for _, r in self.fastapi}))
        self.lookup = lru_cache(maxsize=8192)(self._lookup)

    @property
    def routes(self) -> list[Route]:
        return [*self.flask.values(), *(r for _, r in self.fastapi)]

    def _lookup(self, method: str, path: str) -> Route | None:
        if method == "HEAD":
            method = "GET"
        if path.startswith(self._prefixes):
            for pattern, entry in self.fastapi:
                if entry.method == method and pattern.match(path):
                    return entry
        try:
            rule, _ = self._flask_urls.match(path, method=method, return_rule=True)
        except Exception:  # werkzeug's NotFound / MethodNotAllowed / RequestRedirect: no view runs
            return None
        return self.flask.get((method, rule.rule))
