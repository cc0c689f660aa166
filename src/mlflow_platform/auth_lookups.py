"""MLflow's authorization, without the reads it does not need.

To decide one request, MLflow's basic-auth (3.17) loads far more than it looks at:
- a run's experiment: ``get_run`` loads the run's params, tags, latest metrics, inputs and outputs
  (six queries, every key the run ever logged) on every ``log-metric`` and ``log-batch``;
- whether a registered model is a prompt: ``get_registered_model`` loads its tags, aliases and
  every version it has, on every registry read;
- whether the caller is an admin: the user row, read again by every validator and redactor of
  the request (four times for a search);
- the search redactor parses the whole response into protobuf and writes it out again, only to
  learn that the caller may see logged models and nothing has to be withheld.

Each answer here is the same one MLflow's own code reaches, from less: the same store query and
workspace filter without the eager loads, the user row once per request (MLflow memoizes its
denied-tier set per request on the same ground: nothing the request reads changes under it,
and a write through the auth store drops the memo), the redaction's own early return taken before
the parse. Nothing here is cached across requests, so nothing here can be stale.

Each function replaced or narrowed is pinned by its source's fingerprint (``PINNED``): an MLflow
release that changes one fails ``tests/test_auth_lookups.py`` until someone reads the new code.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

#: Where MLflow's auth module (3.17.2) calls ``get_run`` and ``get_registered_model``: these read
#: only ``info.experiment_id``, ``_is_prompt()`` and ``workspace`` (``<module>``: the workspace
#: fetchers, read by ``_get_resource_workspace``). A new call site fails the test.
CALL_SITES = {
    "get_run": {"_run_requirement", "validate_can_read_metric_history_bulk", "_graphql_get_permission_for_run"},
    "get_registered_model": {
        "<module>",
        "_get_permission_from_model_version",
        "_get_permission_from_prompt_name",
        "_get_registered_model_or_prompt_permission",
        "_get_registered_model_permission",
        "_graphql_get_permission_for_model",
        "_registered_model_or_prompt_target",
        "_request_targets_prompt",
    },
}
#: The source fingerprint (sha256 of the function's text, first 16 hex digits) of every MLflow
#: function in the pinned release that this module reads for, stands in for or reorders, by file
#: and qualified name: the callers above, and the store reads, entity conversions and prompt test
#: whose answers the lean reads reproduce.
PINNED = {
    "mlflow/server/auth/__init__.py": {
        "_get_permission_from_model_version": "46c1f0b70cb28840",
        "_get_permission_from_prompt_name": "4fd09c6b9c79690f",
        "_get_registered_model_or_prompt_permission": "e99874109a466f71",
        "_get_registered_model_permission": "db0cef2a11d461b3",
        "_get_resource_workspace": "7bdb3f831f1e6188",
        "_graphql_get_permission_for_model": "c8cd13df2b76cfe1",
        "_graphql_get_permission_for_run": "d1d1c00bf2ce5aff",
        "_redact_run_response": "94e93602c11377f1",
        "_registered_model_or_prompt_target": "b18e4b4a1088fc7b",
        "_request_targets_prompt": "056ed1001fbe8050",
        "_run_requirement": "15ece69f2a7fac52",
        "_withhold_denied_run_model_links": "d921eeba28071da1",
        "validate_can_read_metric_history_bulk": "1729f499ecbff5c1",
    },
    "mlflow/store/tracking/sqlalchemy_store.py": {
        "SqlAlchemyStore._get_run": "e4a2145fa7b63b0b",
        "SqlAlchemyStore.get_run": "d6f45e778000c160",
    },
    "mlflow/store/tracking/dbmodels/models.py": {"SqlRun.to_mlflow_entity": "0f555ce2a3b20994"},
    "mlflow/store/model_registry/sqlalchemy_store.py": {
        "SqlAlchemyStore._get_registered_model": "85de242b515a72b7",
        "SqlAlchemyStore.get_registered_model": "f6c92e790c808b2b",
    },
    "mlflow/store/model_registry/dbmodels/models.py": {
        "SqlRegisteredModel.to_mlflow_entity": "6816807e54f328dc",
        "SqlRegisteredModelTag.to_mlflow_entity": "9765be7a0f834eac",
    },
    "mlflow/entities/model_registry/registered_model.py": {"RegisteredModel._is_prompt": "e124911c2a86fe42"},
    "mlflow/server/auth/sqlalchemy_store.py": {
        "SqlAlchemyStore._get_user": "362f5cbb2377d8bd",
        "SqlAlchemyStore.get_user": "c2ba40f69c41080f",
    },
    "mlflow/server/auth/db/models.py": {"SqlUser.to_mlflow_entity": "3fd23bd21e816e10"},
}
_REQUEST_USERS = "_platform_auth_users"


class _Narrowed:
    """A store whose every other method is MLflow's own."""

    def __init__(self, store: Any):
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class LeanTrackingStore(_Narrowed):
    """The tracking store as MLflow's authorization sees it: ``get_run`` answers from the run's row."""

    def get_run(self, run_id: str) -> Any:
        from mlflow.entities import Run, RunData, RunInfo
        from mlflow.store.tracking.dbmodels.models import SqlRun
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        store = self._store
        if not isinstance(store, SqlAlchemyStore):
            return store.get_run(run_id)
        columns = (SqlRun.run_uuid, SqlRun.name, SqlRun.experiment_id, SqlRun.user_id, SqlRun.status)
        columns += (SqlRun.start_time, SqlRun.end_time, SqlRun.lifecycle_stage, SqlRun.artifact_uri)
        with store.ManagedSessionMaker() as session:
            # MLflow's query (its workspace filter included), for the row's columns only
            rows = store._get_query(session, SqlRun).filter(SqlRun.run_uuid == run_id).with_entities(*columns).all()
        row = _one(rows, "Run", f"id={run_id}")
        info = RunInfo(
            run_id=row.run_uuid,
            run_name=row.name,
            experiment_id=str(row.experiment_id),
            user_id=row.user_id,
            status=row.status,
            start_time=row.start_time,
            end_time=row.end_time,
            lifecycle_stage=row.lifecycle_stage,
            artifact_uri=row.artifact_uri,
        )
        return Run(run_info=info, run_data=RunData())


class LeanRegistryStore(_Narrowed):
    """The registry as MLflow's authorization sees it: ``get_registered_model`` answers with the
    model's name, its prompt marker and workspace, without its other tags, aliases or versions."""

    def get_registered_model(self, name: str) -> Any:
        from mlflow.entities.model_registry import RegisteredModel, RegisteredModelTag
        from mlflow.prompt.constants import IS_PROMPT_TAG_KEY
        from mlflow.store.model_registry.dbmodels.models import SqlRegisteredModel, SqlRegisteredModelTag
        from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore
        from mlflow.utils.validation import _validate_model_name
        from sqlalchemy import and_

        store = self._store
        if not isinstance(store, SqlAlchemyStore):
            return store.get_registered_model(name)
        _validate_model_name(name)
        model, tag = SqlRegisteredModel, SqlRegisteredModelTag
        marker = and_(tag.workspace == model.workspace, tag.name == model.name, tag.key == IS_PROMPT_TAG_KEY)
        columns = (model.name, model.creation_time, model.last_updated_time, model.description, model.workspace)
        with store.ManagedSessionMaker() as session:
            # MLflow's query (its workspace filter included), joined to the one tag that says "prompt"
            query = store._get_query(session, model).filter(model.name == name).outerjoin(tag, marker)
            rows = query.with_entities(*columns, tag.value).all()
        row = _one(rows, "Registered Model", f"name={name}")
        tags = [] if row.value is None else [RegisteredModelTag(IS_PROMPT_TAG_KEY, row.value)]
        return RegisteredModel(
            row.name, row.creation_time, row.last_updated_time, row.description, tags=tags, workspace=row.workspace
        )


def _one(rows: list, kind: str, key: str) -> Any:
    """The one row, or MLflow's errors for none (which its validators deny on) and for several."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_STATE, RESOURCE_DOES_NOT_EXIST

    if not rows:
        raise MlflowException(f"{kind} with {key} not found", RESOURCE_DOES_NOT_EXIST)
    if len(rows) > 1:
        raise MlflowException(f"Expected only 1 {kind.lower()} with {key}. Found {len(rows)}.", INVALID_STATE)
    return rows[0]


def _user_row(store: Any) -> Callable[[str], Any]:
    """MLflow's ``get_user`` as one SELECT of the row's columns, read fresh on every request: the
    same row, the same error for a missing user, and MLflow's session around it, so a database
    error answers as MLflow's does (400, or 503 while the database is away), never 500."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST
    from mlflow.server.auth.db.models import SqlUser
    from mlflow.server.auth.entities import User
    from sqlalchemy import select

    columns = select(SqlUser.id, SqlUser.username, SqlUser.password_hash, SqlUser.is_admin)

    def get_user(username: str) -> User:
        with store.ManagedSessionMaker() as session:
            row = session.execute(columns.where(SqlUser.username == username)).first()
        if row is None:
            raise MlflowException(f"User with username={username} not found", RESOURCE_DOES_NOT_EXIST)
        return User(id_=row.id, username=row.username, password_hash=row.password_hash, is_admin=row.is_admin)

    return get_user


def _memoized_per_request(get_user: Callable[[str], Any]) -> Callable[[str], Any]:
    """The user row once per request; outside a Flask request (the FastAPI half), every call reads."""
    from flask import g, has_request_context

    @functools.wraps(get_user)
    def read(username: str, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs or not has_request_context():
            return get_user(username, *args, **kwargs)
        users = g.setdefault(_REQUEST_USERS, {})
        if username not in users:
            users[username] = get_user(username)
        return users[username]

    return read


def forget_request_users() -> None:
    """After a write through the auth store (a user made admin, deleted, created again): the rest of
    the request reads the user again."""
    from flask import g, has_request_context

    if has_request_context():
        g.pop(_REQUEST_USERS, None)


def _redaction_after_the_gate(auth: Any) -> Callable:
    """MLflow's run redactor, with its own gate first: when the caller may see every logged model,
    ``_withhold_denied_run_model_links`` withholds nothing, so the response needs no parse."""

    def redact(resp: Any, response_message: Any, runs_of: Callable) -> None:
        if auth.sender_is_admin():
            return
        username = auth.authenticate_request().username
        if auth.RESOURCE_TYPE_LOGGED_MODEL not in auth._denied_sibling_tiers(
            username, (auth.RESOURCE_TYPE_LOGGED_MODEL,)
        ):
            return
        if not isinstance(resp.json, dict):
            return
        auth.parse_dict(resp.json, response_message)
        if auth._withhold_denied_run_model_links(runs_of(response_message), username):
            resp.data = auth.message_to_json(response_message)

    return redact


def _forgetting_after(write: Callable) -> Callable:
    @functools.wraps(write)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return write(*args, **kwargs)
        finally:
            forget_request_users()

    return call


def install() -> None:
    """Point MLflow's auth module at the lean stores, the per-request user and the gated redactor."""
    from mlflow.server import auth, handlers

    from .permission_cache import is_write

    auth._get_tracking_store = lambda *a, **k: LeanTrackingStore(handlers._get_tracking_store(*a, **k))
    auth._get_model_registry_store = lambda *a, **k: LeanRegistryStore(handlers._get_model_registry_store(*a, **k))
    store = auth.store
    for name in dir(type(store)):
        if is_write(name) and callable(getattr(store, name)):
            setattr(store, name, _forgetting_after(getattr(store, name)))
    store.get_user = _memoized_per_request(_user_row(store))
    auth._redact_run_response = _redaction_after_the_gate(auth)
