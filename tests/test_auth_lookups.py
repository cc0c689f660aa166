"""The narrowed authorization reads (auth_lookups.py) against MLflow's own store on SQLite: the same
answers as MLflow's full reads, from one statement whatever the run or model holds; the
user row once per request and again after a write; the run redactor unchanged in what it strips.
And the pin: an MLflow release that changes a function whose reads are narrowed fails here."""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from flask import Flask

from mlflow_platform import auth_lookups


def _source(path: str = "mlflow/server/auth/__init__.py") -> str:
    """A file of the pinned MLflow, read as text (importing its auth module starts half of MLflow)."""
    return Path(importlib.metadata.distribution("mlflow").locate_file(path)).read_text()


def _functions(source: str, names) -> dict[str, str]:
    """The text of each named function: ``name`` at the top level, ``Class.name`` for a method."""
    found = {}
    for node in ast.parse(source).body:
        members = node.body if isinstance(node, ast.ClassDef) else [node]
        prefix = f"{node.name}." if isinstance(node, ast.ClassDef) else ""
        for member in members:
            if isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef)) and prefix + member.name in names:
                found[prefix + member.name] = ast.get_source_segment(source, member) or ""
    return found


@pytest.mark.parametrize("path", sorted(auth_lookups.PINNED))
def test_every_function_the_lean_reads_stand_in_for_is_the_one_read(path: str) -> None:
    pinned = auth_lookups.PINNED[path]
    functions = _functions(_source(path), pinned)
    changed = [
        name
        for name, fingerprint in pinned.items()
        if hashlib.sha256(functions.get(name, "").encode()).hexdigest()[:16] != fingerprint
    ]
    assert not changed, f"MLflow changed {changed} in {path}: read them against auth_lookups.py, then update PINNED"


def test_no_new_caller_reads_a_narrowed_answer() -> None:
    sites: dict[str, set[str]] = {}

    def walk(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Attribute) and child.attr in auth_lookups.CALL_SITES:
                sites.setdefault(child.attr, set()).add(function)
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            walk(child, inner)

    walk(ast.parse(_source()), "<module>")
    assert sites == auth_lookups.CALL_SITES
    callers = set().union(*auth_lookups.CALL_SITES.values()) - {"<module>"}
    assert callers <= set(auth_lookups.PINNED["mlflow/server/auth/__init__.py"])


# -- the lean stores, on MLflow's SQLite store ---------------------------------------------------------
class Statements:
    """Counts the SQL an engine runs, and the tables it reads."""

    def __init__(self, engine):
        from sqlalchemy import event

        self.sql: list[str] = []
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, conn, cursor, statement, *args) -> None:
        if not statement.startswith("PRAGMA"):  # SQLite's per-connection settings
            self.sql.append(statement)

    def during(self, call):
        self.sql.clear()
        result = call()
        return result, list(self.sql)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as Registry
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as Tracking

    folder = tmp_path_factory.mktemp("lean")
    uri = f"sqlite:///{folder}/mlflow.db"
    return Tracking(uri, str(folder / "artifacts")), Registry(uri)


def test_a_runs_experiment_comes_from_its_row_whatever_the_run_holds(stores) -> None:
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.exceptions import MlflowException

    tracking, _ = stores
    experiment = tracking.create_experiment("lean-runs")
    run = tracking.create_run(experiment, "ana", 0, [], "r").info.run_id
    tracking.log_batch(
        run,
        metrics=[Metric(f"m{i}", 1.0, 0, 0) for i in range(100)],
        params=[Param(f"p{i}", "v") for i in range(100)],
        tags=[RunTag(f"t{i}", "v") for i in range(50)],
    )
    lean, counted = auth_lookups.LeanTrackingStore(tracking), Statements(tracking.engine)
    full, full_sql = counted.during(lambda: tracking.get_run(run))
    narrowed, narrowed_sql = counted.during(lambda: lean.get_run(run))
    assert narrowed.info.experiment_id == full.info.experiment_id == experiment
    assert narrowed.info.lifecycle_stage == full.info.lifecycle_stage
    assert len(narrowed_sql) == 1 and len(full_sql) >= 6
    assert "params" not in narrowed_sql[0] and "latest_metrics" not in narrowed_sql[0]
    with pytest.raises(MlflowException) as missing:  # MLflow's validators deny on exactly this
        lean.get_run("0" * 32)
    assert missing.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert lean.search_runs is not None and lean.get_experiment(experiment).name == "lean-runs"  # the rest: MLflow's


def test_a_models_prompt_marker_comes_without_its_versions(stores) -> None:
    from mlflow.entities.model_registry import RegisteredModelTag
    from mlflow.exceptions import MlflowException

    tracking, registry = stores
    registry.create_registered_model("lean-model")
    registry.create_registered_model("lean-prompt", tags=[RegisteredModelTag("mlflow.prompt.is_prompt", "true")])
    for _ in range(40):
        registry.create_model_version("lean-model", "s3://b/m", run_id=None)
    registry.set_registered_model_alias("lean-model", "champion", "40")
    lean, counted = auth_lookups.LeanRegistryStore(registry), Statements(registry.engine)
    full, full_sql = counted.during(lambda: registry.get_registered_model("lean-model"))
    model, model_sql = counted.during(lambda: lean.get_registered_model("lean-model"))
    prompt = lean.get_registered_model("lean-prompt")
    assert (model._is_prompt(), prompt._is_prompt()) == (False, True)
    assert model.workspace == full.workspace and model.name == full.name
    assert not any("model_versions" in sql for sql in model_sql)
    assert len(model_sql) == 1 < len(full_sql)
    with pytest.raises(MlflowException) as missing:
        lean.get_registered_model("no-such-model")
    assert missing.value.error_code == "RESOURCE_DOES_NOT_EXIST"


# -- the user row, once per request ------------------------------------------------------------------------
class Users:
    def __init__(self):
        self.reads, self.admin = 0, False

    def get_user(self, username):
        self.reads += 1
        return SimpleNamespace(username=username, is_admin=self.admin)

    def update_user(self, username, is_admin):
        self.admin = is_admin


def test_the_user_row_is_read_once_per_request_and_again_after_a_write() -> None:
    users = Users()
    get_user = auth_lookups._memoized_per_request(users.get_user)
    update_user = auth_lookups._forgetting_after(users.update_user)
    app = Flask(__name__)
    with app.test_request_context("/one"):
        assert [get_user("ana").is_admin for _ in range(4)] == [False] * 4
        assert users.reads == 1
        update_user("ana", True)  # e.g. an admin's request that promotes ana, then answers with her
        assert get_user("ana").is_admin is True and users.reads == 2
        get_user("ben")
        assert users.reads == 3  # keyed by user
    with app.test_request_context("/two"):
        get_user("ana")
        assert users.reads == 4  # nothing crosses requests
    get_user("ana")
    get_user("ana")
    assert users.reads == 6  # outside a Flask request (the FastAPI half): every call reads


# -- the run redactor ----------------------------------------------------------------------------------------
def _search_response(json_body: dict):
    from flask import Response

    return Response(json.dumps(json_body), mimetype="application/json")


@pytest.mark.parametrize("denied", [False, True])
def test_the_run_redactor_strips_what_mlflows_strips(monkeypatch, denied: bool) -> None:
    from mlflow.protos.service_pb2 import SearchRuns
    from mlflow.server import auth

    body = {
        "runs": [
            {
                "info": {"run_id": "r1", "experiment_id": "1"},
                "data": {"metrics": [{"key": "m", "value": 1.0, "timestamp": 0, "step": 0, "model_id": "m-1"}]},
                "outputs": {"model_outputs": [{"model_id": "m-1", "step": 0}]},
            }
        ]
    }
    monkeypatch.setattr(auth, "sender_is_admin", lambda: False)
    monkeypatch.setattr(auth, "authenticate_request", lambda: SimpleNamespace(username="ben"))
    monkeypatch.setattr(
        auth, "_denied_sibling_tiers", lambda user, types: {auth.RESOURCE_TYPE_LOGGED_MODEL} if denied else set()
    )
    parsed = []
    real_parse = auth.parse_dict
    monkeypatch.setattr(auth, "parse_dict", lambda *a: parsed.append(1) or real_parse(*a))
    ours, theirs = _search_response(body), _search_response(body)
    with Flask(__name__).test_request_context("/"):
        auth_lookups._redaction_after_the_gate(auth)(ours, SearchRuns.Response(), lambda m: m.runs)
        parses_ours = len(parsed)
        auth._redact_run_response(theirs, SearchRuns.Response(), lambda m: m.runs)
    assert json.loads(ours.get_data()) == json.loads(theirs.get_data())
    assert ("model_id" in ours.get_data(as_text=True)) is not denied
    assert parses_ours == (1 if denied else 0)  # nothing to withhold: no parse


def test_the_user_row_is_mlflows_user(tmp_path) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(f"sqlite:///{tmp_path}/auth.db")
    store.create_user("ana", "a-long-password-1", is_admin=True)
    lean = auth_lookups._user_row(store)
    assert vars(lean("ana")) == vars(store.get_user("ana"))  # every field, so a new one fails here
    store.update_user("ana", is_admin=False)
    assert lean("ana").is_admin is False  # read fresh: nothing is kept between calls
    with pytest.raises(MlflowException) as missing:
        lean("nobody")
    assert missing.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with store.engine.begin() as connection:  # the database fails under the read
        connection.exec_driver_sql("ALTER TABLE users RENAME TO users_gone")
    with pytest.raises(MlflowException) as broken:  # MLflow's mapping of it, not a 500's traceback
        lean("ana")
    assert broken.value.error_code in ("BAD_REQUEST", "TEMPORARILY_UNAVAILABLE")
