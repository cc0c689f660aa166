"""Checks MLflow does not make, run on its Flask half after its own authorization.

Storage a caller names itself. ``CreateModelVersion`` accepts a raw storage source and
``/model-versions/get-artifact`` then reads it with the server's bucket-wide credentials; an
experiment's ``artifact_location`` is read the same way. So a source or location must name the
caller's own workspace's part of the artifact store (``workspaces/<workspace>/…`` under the
server's artifact root, or, in the default workspace, the legacy layout outside ``workspaces/``),
or a run or model MLflow checks READ on. Anything else (another prefix, another scheme, ``..``,
percent-encodings, doubled slashes) is refused, for admins too: a version an admin points at a
whole bucket is readable by every member of the model's workspace.

Password users in a stack with single sign-on. Only the server admin creates them (MLflow lets
workspace admins), never under a name shaped like an SSO identity, and a person who signs in
through SSO is never given a password: otherwise a team admin could hold a login under a person's
name and receive what is later granted to it.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

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


def _json_body() -> dict:
    """The body exactly as MLflow's handlers read it (any content type, double-encoded JSON from old
    clients decoded again): a guard that parsed it differently could be walked around."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.handlers import _get_normalized_request_json

    try:
        body = _get_normalized_request_json()
    except (MlflowException, ValueError):
        return {}  # MLflow refuses this body itself
    return body if isinstance(body, dict) else {}


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

    source = _json_body().get("source")
    if not isinstance(source, str) or source in _PROMPT_SOURCE_PLACEHOLDERS:
        return None  # MLflow answers a missing source itself; a prompt's placeholder names no storage
    workspace, root = _storage_context()
    try:
        run_id = check_storage_uri(source, workspace, root, allow_runs_and_models=True)
    except Refused as exc:
        return _refuse(400, f"model version source {source!r} refused: {exc}.")
    if run_id and not auth.sender_is_admin() and not auth._authorize_run_id(run_id, "read"):
        return _refuse(403, f"model version source {source!r} refused: you may not read run {run_id}.")
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
    return None


def _guard_experiment_location():
    location = _json_body().get("artifact_location")
    if not location:
        return None
    workspace, root = _storage_context()
    try:
        check_storage_uri(location, workspace, root, allow_runs_and_models=False)
    except Refused as exc:
        return _refuse(400, f"artifact_location {location!r} refused: {exc}; leave it empty and the server places it.")
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
    username = (request.form.get("username") if request.form else None) or _json_body().get("username") or ""
    if looks_like_sso_identity(str(username), settings.username_claim):
        return _refuse(
            400,
            f"{username!r} looks like a single sign-on identity ({settings.username_claim}): people sign in "
            "through the IdP; give a machine user a name without '@' (e.g. ci-ranking).",
        )
    return None


def _guard_password_update():
    from mlflow.server import auth

    from . import sso

    if sso.settings() is None:
        return None
    username = _json_body().get("username")
    if isinstance(username, str) and sso.is_sso_user(auth.store, username):
        return _refuse(403, f"{username!r} signs in through single sign-on and never has a password.")
    return None


def _routes(*paths: str) -> set[str]:
    return {p for path in paths for p in (path, path.replace("/api/", "/ajax-api/", 1))}


def install(flask_app) -> None:
    """Register the guards on MLflow's Flask app, after its own authorization hook."""
    from mlflow.server.auth import routes as auth_routes

    guards = (
        {("POST", p): _guard_version_source for p in _routes("/api/2.0/mlflow/model-versions/create")}
        | {("GET", auth_routes.GET_MODEL_VERSION_ARTIFACT): _guard_version_read}
        | {("POST", p): _guard_experiment_location for p in _routes("/api/2.0/mlflow/experiments/create")}
        | {("POST", p): _guard_user_create for p in _routes(auth_routes.CREATE_USER, auth_routes.CREATE_USER_UI)}
        | {("PATCH", p): _guard_password_update for p in _routes(auth_routes.UPDATE_USER_PASSWORD)}
    )

    def guard():
        from flask import request

        check = guards.get((request.method, request.path))
        return check() if check is not None else None

    flask_app.before_request(guard)
