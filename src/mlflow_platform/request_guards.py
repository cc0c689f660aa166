"""Checks MLflow does not make, run on its Flask half after its own authorization.

Storage a caller names itself. ``CreateModelVersion`` accepts a raw storage source and
``/model-versions/get-artifact`` then reads it with the server's bucket-wide credentials; an
experiment's ``artifact_location`` is read the same way. So a source or location must name the
caller's own workspace's part of the artifact store (``workspaces/<workspace>/…`` under the
server's artifact root, or, in the default workspace, the legacy layout outside ``workspaces/``),
or a run or model MLflow checks READ on; a raw location must also name an experiment the caller
may read. Anything else (another prefix, another scheme, ``..``,
percent-encodings, doubled slashes) is refused, for admins too: a version an admin points at a
whole bucket is readable by every member of the model's workspace.

Trace payloads are read from where a trace's tags say: nobody writes those tags, and a payload is
served only from its experiment's trace folder. Role requests: MLflow authorizes by the first id it
finds and the handler acts on another, so all of them must name one workspace.

Password users in a stack with single sign-on. Only the server admin creates them (MLflow lets
workspace admins), never under a name shaped like an SSO identity, and a person who signs in
through SSO is never given a password: otherwise a team admin could hold a login under a person's
name and receive what is later granted to it.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from mlflow.tracing.constant import TraceTagKey
from mlflow.utils.mlflow_tags import MLFLOW_ARTIFACT_LOCATION

#: A path segment as MLflow writes them (experiment and run ids, artifact names).
_SAFE_PATH = re.compile(r"^[A-Za-z0-9._\-/+=@ ]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f%\\]")


class Refused(Exception):
    """The request names storage or a user it may not; the message says what to do instead."""


def _clean_relative(path: str) -> str:
    if _CONTROL.search(path) or not _SAFE_PATH.match(path):
        raise Refused("it holds characters MLflow never writes in an artifact path (%, \\, control characters)")
    parts = path.split("/")
    if "" in parts[:-1] or any(p in (".", "..") for p in parts):
        raise Refused("it has an empty, '.' or '..' path segment")
    return path.rstrip("/")


def _inside_workspace(relative: str, workspace: str | None) -> None:
    """``relative`` (below the artifact root) lies in ``workspace``'s part of the store."""
    if workspace is None:  # a server without workspaces: the whole root is one tenant
        return
    if relative.startswith(f"workspaces/{workspace}/"):
        return
    if workspace == "default" and relative and relative.split("/", 1)[0] != "workspaces":
        return
    raise Refused(f"it lies outside workspace {workspace!r}'s artifacts")


def check_storage_uri(uri: str, workspace: str | None, artifact_root: str, *, allow_runs_and_models: bool) -> str:
    """The run id of a ``runs:/`` source (MLflow must check READ on it), or ``""``; raises Refused."""
    parts = urlsplit(uri.strip())
    scheme = parts.scheme.lower()
    if allow_runs_and_models and scheme == "models":
        return ""  # MLflow checks READ on the named model or logged model
    if allow_runs_and_models and scheme == "runs":
        if parts.netloc or not parts.path.startswith("/") or not parts.path.split("/")[1]:
            raise Refused("a runs:/ source is runs:/<run id>/<path>")
        _clean_relative(parts.path[1:])
        return parts.path.split("/")[1]
    if scheme == "mlflow-artifacts":
        if parts.netloc or parts.query or parts.fragment:
            raise Refused("use mlflow-artifacts:/<path>, with no host")
        _inside_workspace(_clean_relative(parts.path.lstrip("/")), workspace)
        return ""
    root = urlsplit(artifact_root)
    if scheme == root.scheme.lower() and parts.netloc == root.netloc and not (parts.query or parts.fragment):
        prefix = root.path.strip("/")
        path = parts.path.lstrip("/") if parts.path.startswith("/") and not parts.path.startswith("//") else "//"
        if prefix and not path.startswith(prefix + "/"):
            raise Refused("it lies outside the server's artifact root")
        _inside_workspace(_clean_relative(path[len(prefix) + 1 :] if prefix else path), workspace)
        return ""
    raise Refused("name a run (runs:/…), a model (models:/…) or the server's own artifacts (mlflow-artifacts:/…)")


def experiment_of(uri: str, artifact_root: str) -> str | None:
    """The experiment id a storage URI (already checked) lies under: ``[workspaces/<ws>/]<id>/…``."""
    parts = urlsplit(uri.strip())
    if parts.scheme.lower() == "mlflow-artifacts":
        relative = parts.path.lstrip("/")
    elif parts.scheme.lower() in ("runs", "models"):
        return None
    else:
        prefix = urlsplit(artifact_root).path.strip("/")
        relative = parts.path.lstrip("/")[len(prefix) :].lstrip("/") if prefix else parts.path.lstrip("/")
    segments = relative.split("/")
    if segments[0] == "workspaces":
        segments = segments[2:]
    return segments[0] if segments else ""


def _experiment_unreadable(source: str, workspace: str | None, root: str) -> str | None:
    """Why the caller may not read the experiment a raw storage source lies under, or None. In the
    default workspace this keeps moved experiments' originals (left in the legacy layout) out of reach."""
    from mlflow.exceptions import MlflowException
    from mlflow.server import auth

    experiment = experiment_of(source, root)
    if experiment is None or auth.sender_is_admin():
        return None
    if not experiment.isdigit():
        return "it names no experiment"
    try:
        readable = auth._get_experiment_permission(experiment, auth.authenticate_request().username).can_read
    except MlflowException:
        readable = False
    return None if readable else f"you may not read experiment {experiment}'s artifacts"


def _json_body() -> dict:
    """The body as any of MLflow's parsers could read it: whatever the content type (its handlers
    force-parse; ``is_json`` also takes ``application/*+json``), and double-encoded JSON from old
    clients decoded again. A guard that read less than a handler could be walked around."""
    import json

    from flask import request

    body = request.get_json(force=True, silent=True)
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return {}
    return body if isinstance(body, dict) else {}


def _values(body: dict, field: str) -> list:
    """A field under its proto name and its JSON (camelCase) name: MLflow's parser takes both."""
    head, *rest = field.split("_")
    camel = head + "".join(part.title() for part in rest)
    return [body[key] for key in dict.fromkeys((field, camel)) if body.get(key) not in (None, "")]


def _refuse(status: int, message: str):
    from flask import make_response

    code = "INVALID_PARAMETER_VALUE" if status == 400 else "PERMISSION_DENIED"
    return make_response({"error_code": code, "message": message}, status)


def _storage_context() -> tuple[str | None, str]:
    import os

    from mlflow.server.constants import ARTIFACTS_DESTINATION_ENV_VAR
    from mlflow.utils import workspace_context

    return workspace_context.get_request_workspace(), os.environ.get(ARTIFACTS_DESTINATION_ENV_VAR, "")


def _guard_version_source():
    from mlflow.server import auth
    from mlflow.server.handlers import _PROMPT_SOURCE_PLACEHOLDERS

    workspace, root = _storage_context()
    for source in _values(_json_body(), "source"):
        if not isinstance(source, str) or source in _PROMPT_SOURCE_PLACEHOLDERS:
            continue  # MLflow refuses a non-string itself; a prompt's placeholder names no storage
        try:
            run_id = check_storage_uri(source, workspace, root, allow_runs_and_models=True)
        except Refused as exc:
            return _refuse(400, f"model version source {source!r} refused: {exc}.")
        if run_id and not auth.sender_is_admin() and not auth._authorize_run_id(run_id, "read"):
            return _refuse(403, f"model version source {source!r} refused: you may not read run {run_id}.")
        if refused := _experiment_unreadable(source, workspace, root):
            return _refuse(403, f"model version source {source!r} refused: {refused}.")
    return None


def _guard_version_read():
    from flask import request
    from mlflow.exceptions import MlflowException
    from mlflow.server.handlers import _get_model_registry_store

    try:
        version = _get_model_registry_store().get_model_version(request.args.get("name"), request.args.get("version"))
    except MlflowException:
        return None  # MLflow answers the missing version itself
    workspace, root = _storage_context()
    try:
        check_storage_uri(version.source or "", workspace, root, allow_runs_and_models=True)
    except Refused as exc:
        return _refuse(403, f"this version's source is not readable through the server: {exc}.")
    if refused := _experiment_unreadable(version.source, workspace, root):
        return _refuse(403, f"this version's source is not readable through the server: {refused}.")
    return None


def _guard_experiment_location():
    workspace, root = _storage_context()
    for location in _values(_json_body(), "artifact_location"):
        try:
            check_storage_uri(str(location), workspace, root, allow_runs_and_models=False)
        except Refused as exc:
            return _refuse(
                400, f"artifact_location {location!r} refused: {exc}; leave it empty and the server places it."
            )
    return None


def _guard_role_target():
    """MLflow authorizes a role request by the first of role_id, role_permission_id and workspace it
    finds, while each handler acts on its own one: a team admin could name its own role and edit
    another team's. Every one present must name the same workspace."""
    from mlflow.exceptions import MlflowException
    from mlflow.server import auth

    params = auth._request_params()
    named = set()
    try:
        if "role_id" in params:
            named.add(auth.store.get_role(auth._coerce_int_param("role_id", params["role_id"])).workspace)
        if "role_permission_id" in params:
            permission_id = auth._coerce_int_param("role_permission_id", params["role_permission_id"])
            named.add(auth.store.get_role(auth.store.get_role_permission(permission_id).role_id).workspace)
    except MlflowException:
        return None  # MLflow answers a missing or malformed id itself
    if isinstance(params.get("workspace"), str):
        named.add(params["workspace"].strip())
    if len(named) > 1:
        return _refuse(400, f"the request names roles in different workspaces ({', '.join(sorted(named))}).")
    return None


#: Trace tags the server writes: where the trace's payload and archive are. A trace's owner who
#: could rewrite them would make the server read another team's traces with its own credentials.
SERVER_TRACE_TAGS = (MLFLOW_ARTIFACT_LOCATION, TraceTagKey.ARCHIVE_LOCATION, TraceTagKey.SPANS_LOCATION)


def _trace_tag_keys(body: dict) -> set[str]:
    keys = set(_values(body, "key"))
    for container in (body, (body.get("trace") or {}).get("trace_info") or {}, body.get("trace_info") or {}):
        tags = container.get("tags") if isinstance(container, dict) else None
        if isinstance(tags, dict):
            keys |= set(tags)
        elif isinstance(tags, list):
            keys |= {t.get("key") for t in tags if isinstance(t, dict)}
    return keys


def _guard_trace_tags():
    if written := _trace_tag_keys(_json_body()) & set(SERVER_TRACE_TAGS):
        return _refuse(403, f"trace tag {sorted(written)[0]!r} is written by the server only.")
    return None


def _guard_trace_artifact_read():
    """The payload is read from the trace's ``mlflow.artifactLocation``: it must be exactly where MLflow
    puts a trace of its experiment, whatever wrote the tag."""
    from flask import request
    from mlflow.exceptions import MlflowException
    from mlflow.server.handlers import _get_tracking_store
    from mlflow.utils.uri import append_to_uri_path

    store = _get_tracking_store()
    try:
        trace = store.get_trace_info(request.args.get("request_id") or "")
        experiment = store.get_experiment(trace.experiment_id)
    except MlflowException:
        return None  # MLflow answers a missing trace itself
    if trace is None:
        return None
    expected = append_to_uri_path(experiment.artifact_location, "traces", trace.trace_id, "artifacts")
    if trace.tags.get(SERVER_TRACE_TAGS[0], expected) != expected:
        return _refuse(403, "this trace's artifact location is not its experiment's: not served.")
    return None


def looks_like_sso_identity(username: str, username_claim: str) -> bool:
    """E-mail-shaped names are what ``email``, ``upn`` and (Okta, Entra) ``preferred_username`` carry."""
    return username_claim in ("email", "upn", "preferred_username") and "@" in username


def _guard_user_create():
    from flask import request
    from mlflow.server import auth

    from . import sso

    settings = sso.settings()
    if settings is None:
        return None
    if not auth.sender_is_admin():
        return _refuse(403, "In a stack with single sign-on only the server admin creates password users.")
    names = [request.form.get("username")] if request.form else []
    for username in [*names, *_values(_json_body(), "username")]:
        if looks_like_sso_identity(str(username or ""), settings.username_claim):
            return _refuse(
                400,
                f"{username!r} looks like a single sign-on identity ({settings.username_claim}): people sign "
                "in through the IdP; give a machine user a name without '@' (e.g. ci-ranking).",
            )
    return None


def _guard_password_update():
    from mlflow.server import auth

    from . import sso

    if sso.settings() is None:
        return None
    for username in _values(_json_body(), "username"):
        if isinstance(username, str) and sso.is_sso_user(auth.store, username):
            return _refuse(403, f"{username!r} signs in through single sign-on and never has a password.")
    return None


def _both(*rules: str) -> set[str]:
    """A REST rule and its /ajax-api twin."""
    return {r for rule in rules for r in (rule, rule.replace("/api/", "/ajax-api/", 1))}


def _guards() -> dict[tuple[str, str], object]:
    """(method, Flask rule) -> guard."""
    from mlflow.server.auth import _RBAC_ROUTES
    from mlflow.server.auth import routes as auth_routes

    guards: dict[tuple[str, str], object] = {}
    for method, rules, guard in (
        ("POST", _both("/api/2.0/mlflow/model-versions/create"), _guard_version_source),
        ("GET", {auth_routes.GET_MODEL_VERSION_ARTIFACT}, _guard_version_read),
        ("POST", _both("/api/2.0/mlflow/experiments/create"), _guard_experiment_location),
        ("POST", _both(auth_routes.CREATE_USER, auth_routes.CREATE_USER_UI), _guard_user_create),
        ("PATCH", _both(auth_routes.UPDATE_USER_PASSWORD), _guard_password_update),
        (
            "PATCH",
            _both("/api/2.0/mlflow/traces/<request_id>/tags", "/api/3.0/mlflow/traces/<trace_id>/tags"),
            _guard_trace_tags,
        ),
        ("POST", _both("/api/2.0/mlflow/traces", "/api/3.0/mlflow/traces"), _guard_trace_tags),
        ("PATCH", _both("/api/2.0/mlflow/traces/<request_id>"), _guard_trace_tags),  # EndTrace (v2) carries tags
        ("GET", {auth_routes.GET_TRACE_ARTIFACT, auth_routes.GET_TRACE_ARTIFACT_V3}, _guard_trace_artifact_read),
    ):
        guards |= {(method, rule): guard for rule in rules}
    for _, method, rest, ajax in _RBAC_ROUTES:
        guards |= {(method, rest): _guard_role_target, (method, ajax): _guard_role_target}
    return guards


def install(flask_app) -> None:
    """Register the guards on MLflow's Flask app, after its own authorization hook."""
    guards = _guards()

    def guard():
        from flask import request

        rule = request.url_rule
        check = guards.get((request.method, rule.rule)) if rule is not None else None
        return check() if check is not None else None

    flask_app.before_request(guard)
