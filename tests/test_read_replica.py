"""The read replica (``database.readReplica``): rendered, deployed and run for real.

Locally it is a PostgreSQL hot standby streaming from the platform's own PostgreSQL, so the tests
make it lag for real (``pg_wal_replay_pause()``) and kill it for real, then check what a client
sees through the rendered server. MLflow's own routing is run beside ours as the counterfactual.
"""

from __future__ import annotations

import copy
import json
import time
import warnings
from pathlib import Path

import pytest
import requests
import sqlalchemy.exc
import yaml

from mlflow_platform import policy_check, replica_reads
from mlflow_platform.config import ConfigError, StackConfig, load_stack_file
from mlflow_platform.local.platform import LocalPlatform, packaged_local_stack
from mlflow_platform.server_spec import Endpoints, render_server

from .paths import ROOT
from .platforms import admin_client, running_platform
from .test_infra_program import run_with, stack_section

REPLICA_URI = replica_reads.READ_REPLICA_URI_ENV


def _replica_uri(spec) -> str | None:
    return {e.name: e.value for e in spec.env}.get(REPLICA_URI)


def _stack(tmp_path: Path, server: dict | None = None, **database) -> Path:
    """The packaged local stack with ``database`` (and ``server``) keys changed, as a file."""
    document = yaml.safe_load(packaged_local_stack().read_text())
    config = document["config"]
    config["mlflow-platform:database"].update(database)
    config["mlflow-platform:server"].update(server or {})
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def _config(tmp_path: Path, **database) -> StackConfig:
    return load_stack_file(_stack(tmp_path, **database)).config


# -- rendered ---------------------------------------------------------------------------------------
def test_the_server_reads_the_replica_over_verified_tls_with_a_short_connect_timeout(tmp_path: Path) -> None:
    config = _config(tmp_path, readReplica={})
    sso = {
        "sso_signer": "arn:aws:elasticloadbalancing:eu-west-1:1:loadbalancer/app/x/1",
        "sso_key_endpoint": "file:///k",
    }
    endpoints = Endpoints(db_host="db.example", bucket="b", db_replica_host="replica.example", **sso)
    spec = render_server(config, endpoints)
    uri = _replica_uri(spec)
    assert "--read-replica-backend-store-uri" not in spec.argv  # MLflow's flag would tie startup to the replica
    assert uri.startswith(f"postgresql+psycopg://{config.database.app_username}@replica.example:5432/mlflow?")
    assert "sslmode=verify-full" in uri and "sslrootcert=" in uri
    assert f"connect_timeout={replica_reads.CONNECT_TIMEOUT_SECONDS}" in uri and "tcp_user_timeout=" in uri
    assert _replica_uri(render_server(_config(tmp_path), endpoints)) is None
    with pytest.raises(ValueError, match="no replica host"):
        render_server(config, Endpoints(db_host="db.example", bucket="b", **sso))


def test_a_replica_without_the_platforms_app_is_refused_naming_the_key(tmp_path: Path) -> None:
    stack = _stack(tmp_path, {"basicAuth": False}, readReplica={"lagAlarmSeconds": 30})
    with pytest.raises(ConfigError, match=r"database\.readReplica.*server\.basicAuth"):
        load_stack_file(stack)


def test_the_breaker_sends_reads_to_the_primary_for_its_window_only() -> None:
    now = [100.0]
    breaker = replica_reads.Breaker(30, clock=lambda: now[0])
    assert breaker.closed
    breaker.trip("refused")
    now[0] += 29.9
    assert not breaker.closed
    now[0] += 0.2
    assert breaker.closed


# -- deployed ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prod_with_replica():
    database = {**stack_section("prod", "database"), "readReplica": {"instanceClass": "db.r6g.large"}}
    return run_with("prod", database=database)


def test_the_replica_is_an_encrypted_private_copy_of_the_primary(prod_with_replica) -> None:
    instances = {r.name: r.inputs for r in prod_with_replica.of_type("aws:rds/instance:Instance")}
    primary, replica = instances["database-instance"], instances["database-replica"]
    assert replica["replicateSourceDb"] == primary["identifier"]
    assert replica["storageEncrypted"] and "kmsKeyId" not in replica  # the source's key, never another
    assert replica["publiclyAccessible"] is False
    assert replica["parameterGroupName"] == primary["parameterGroupName"]  # TLS only, same max_connections
    assert replica["vpcSecurityGroupIds"] == primary["vpcSecurityGroupIds"]
    assert "password" not in replica and "username" not in replica  # inherited, never a second secret
    outputs = prod_with_replica.outputs
    assert outputs["databaseReplicaEndpoint"] and outputs["databaseReplicaEndpoint"] != outputs["databaseEndpoint"]


def test_the_deployment_reads_the_replica_and_an_alarm_watches_its_lag(prod_with_replica) -> None:
    container = prod_with_replica.one("kubernetes:apps/v1:Deployment").inputs["spec"]["template"]["spec"]
    uri = {e["name"]: e for e in container["containers"][0]["env"]}[REPLICA_URI]["value"]
    assert f"@{prod_with_replica.outputs['databaseReplicaEndpoint']}:" in uri
    alarm = prod_with_replica.one("aws:cloudwatch/metricAlarm:MetricAlarm", "monitoring-db-replica-lag").inputs
    assert alarm["metricName"] == "ReplicaLag" and alarm["namespace"] == "AWS/RDS"
    # sustained lag only: a quiet primary's rising ReplicaLag resets at each commit (window minimum)
    assert alarm["statistic"] == "Minimum" and alarm["period"] == 300 and alarm["evaluationPeriods"] == 3
    assert alarm["threshold"] == 60 and alarm["treatMissingData"] == "notBreaching"
    assert alarm["alarmActions"] == [prod_with_replica.outputs["alarmTopicArn"]]
    events = prod_with_replica.one("aws:rds/eventSubscription:EventSubscription").inputs
    assert events["snsTopic"] == prod_with_replica.outputs["alarmTopicArn"]
    assert events["sourceType"] == "db-instance" and len(events["sourceIds"]) == 1
    assert {"failure", "read replica"} <= set(events["eventCategories"])
    key = json.loads(prod_with_replica.one("aws:kms/key:Key", "monitoring-topic-key").inputs["policy"])
    rds = [st for st in key["Statement"] if st["Principal"] == {"Service": "events.rds.amazonaws.com"}]
    assert rds and set(rds[0]["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}


def test_every_mandatory_policy_passes_with_a_replica_and_its_url_is_checked(prod_with_replica) -> None:
    policies = policy_check.load_policies()
    config = policy_check.load_policy_config(ROOT, "prod")
    assert [v for v in policy_check.evaluate(prod_with_replica, policies, config) if v.mandatory] == []
    broken = copy.deepcopy(prod_with_replica)
    env = broken.one("kubernetes:apps/v1:Deployment").inputs["spec"]["template"]["spec"]["containers"][0]["env"]
    entry = next(e for e in env if e["name"] == REPLICA_URI)
    entry["value"] = entry["value"].replace("sslmode=verify-full", "sslmode=require")
    found = policy_check.evaluate(broken, policies, config)
    assert any("database replica certificate" in v.message for v in found if v.mandatory)


# -- run for real -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def replicated():
    def with_replica(document: dict) -> None:
        document["config"]["mlflow-platform:database"]["readReplica"] = {}

    with running_platform(with_replica) as local:
        yield local


@pytest.fixture
def client(replicated: LocalPlatform, monkeypatch: pytest.MonkeyPatch):
    return admin_client(replicated, monkeypatch)


class paused_replay:  # noqa: N801 (a context manager read as a phrase)
    """The replica stops applying what it receives: lag, for as long as the block lasts."""

    def __init__(self, platform: LocalPlatform):
        self.replica = platform.replica()

    def __enter__(self):
        with self.replica.connect() as conn:
            conn.execute("SELECT pg_wal_replay_pause()")

    def __exit__(self, *exc):
        with self.replica.connect() as conn:
            conn.execute("SELECT pg_wal_replay_resume()")


def _wait_caught_up(platform: LocalPlatform, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while platform.replica().replication_lag() != 0:
        assert time.monotonic() < deadline, "the replica did not catch up"
        time.sleep(0.2)


@pytest.mark.slow
def test_the_replica_streams_and_status_reports_its_lag(replicated: LocalPlatform) -> None:
    status = {s.name: s for s in replicated.status()}
    assert status["replica"].healthy and "streaming from" in status["replica"].detail
    assert f"127.0.0.1:{replicated.state.ports.postgres_replica}/" in _replica_uri(replicated.server_spec())
    with replicated.replica().connect() as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True


@pytest.mark.slow
def test_a_lagging_replica_still_reads_your_writes_and_searches_catch_up(replicated: LocalPlatform, client) -> None:
    """What a training script does: create, log at once, read back. MLflow's client does not retry
    the 404 a lagging replica would give; the platform asks the primary."""
    with paused_replay(replicated):
        experiment = client.create_experiment(f"lagging-{time.time_ns()}")
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "loss", 0.5)  # its permission check reads the run
        assert client.get_run(run.info.run_id).data.metrics == {"loss": 0.5}
        # a history is a replica read: "no such run" there is asked again of the primary
        assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == [0.5]
        assert client.get_experiment_by_name(client.get_experiment(experiment).name).experiment_id == experiment
        model = client.create_logged_model(experiment)  # what the fluent API does after log_model
        client.log_metric(run.info.run_id, "accuracy", 0.9, model_id=model.model_id)
        name = f"lagging-{time.time_ns()}"
        client.create_registered_model(name)
        versions = [client.create_model_version(name, f"{run.info.artifact_uri}/m", run.info.run_id) for _ in "ab"]
        client.set_registered_model_alias(name, "champion", versions[0].version)
        client.set_registered_model_alias(name, "champion", versions[1].version)  # a deploy moves it
        assert client.get_model_version_by_alias(name, "champion").version == versions[1].version
        assert client.search_runs([experiment]) == []  # searches read the replica: behind, as documented
    _wait_caught_up(replicated)
    assert [r.info.run_id for r in client.search_runs([experiment])] == [run.info.run_id]


@pytest.mark.slow
def test_a_team_member_uses_what_it_just_created_while_the_replica_lags(replicated: LocalPlatform) -> None:
    """MLflow's permission checks read the run or model a request names; from a lagging replica they
    would deny the member who just created it (403, which no client retries) and MLflow would cache
    that miss. The checks read the primary."""
    from mlflow_platform.team_passwords import PasswordFile

    url, suffix = f"{replicated.tracking_uri()}/api/2.0/mlflow", time.time_ns()
    ana = requests.Session()
    ana.auth = ("ana", PasswordFile(replicated.team_passwords_file).get("ana"))
    ana.headers["X-MLFLOW-WORKSPACE"] = "search"

    def ok(method: str, path: str, **kwargs) -> dict:
        answer = ana.request(method, f"{url}/{path}", timeout=30, **kwargs)
        assert answer.status_code == 200, f"{method} {path}: {answer.status_code} {answer.text[:200]}"
        return answer.json()

    def use(run_id: str, model: str) -> None:
        ok("POST", "runs/log-metric", json={"run_id": run_id, "key": "loss", "value": 0.5, "timestamp": 1, "step": 0})
        ok("POST", "runs/log-parameter", json={"run_id": run_id, "key": f"p{time.time_ns()}", "value": "1"})
        assert ok("GET", "runs/get", params={"run_id": run_id})["run"]["info"]["run_id"] == run_id
        ok("GET", "registered-models/get", params={"name": model})
        ok("POST", "registered-models/set-tag", json={"name": model, "key": "stage", "value": "dev"})

    with paused_replay(replicated):
        experiment = ok("POST", "experiments/create", json={"name": f"member-lag-{suffix}"})["experiment_id"]
        run_id = ok("POST", "runs/create", json={"experiment_id": experiment})["run"]["info"]["run_id"]
        model = ok("POST", "registered-models/create", json={"name": f"member-lag-{suffix}"})["registered_model"][
            "name"
        ]
        use(run_id, model)
    _wait_caught_up(replicated)
    use(run_id, model)  # and nothing denied was remembered


@pytest.mark.slow
def test_mlflows_own_routing_loses_the_write_where_ours_finds_it(
    replicated: LocalPlatform, client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The counterfactual: MLflow's store with the same replica, with and without our routing (the
    server's store class: the local stack declares teams, so workspaces are on)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mlflow.exceptions import MlflowException
        from mlflow.store.db.utils import create_sqlalchemy_engine
        from mlflow.store.tracking.sqlalchemy_workspace_store import WorkspaceAwareSqlAlchemyStore as SqlAlchemyStore
        from mlflow.utils.workspace_context import WorkspaceContext
        from mlflow.utils.workspace_utils import DEFAULT_WORKSPACE_NAME
    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
    ports = replicated.state.ports
    primary = replicated.database_uri()
    replica = primary.replace(f":{ports.postgres}/", f":{ports.postgres_replica}/")
    stock = SqlAlchemyStore(primary, "s3://unused", read_db_uri=replica)
    ours = SqlAlchemyStore(primary, "s3://unused")
    replica_engine = create_sqlalchemy_engine(replica)
    replica_reads.route(ours, replica_engine, replica_reads.Breaker())
    try:
        with paused_replay(replicated):
            run = client.create_run(client.create_experiment(f"counterfactual-{time.time_ns()}"))
            with WorkspaceContext(DEFAULT_WORKSPACE_NAME):
                with pytest.raises(MlflowException, match="not found"):
                    stock.get_run(run.info.run_id)
                assert ours.get_run(run.info.run_id).info.run_id == run.info.run_id
    finally:
        for engine in (stock.engine, stock.read_engine, ours.engine, replica_engine):
            engine.dispose()


@pytest.mark.slow
def test_users_and_grants_are_read_from_the_primary(replicated: LocalPlatform, client) -> None:
    """A user created while the replica lags can sign in at once: auth never reads the replica."""
    admin = (replicated.config.server.admin_username, replicated.secret_values()["admin_password"])
    url = replicated.tracking_uri()
    name, password = f"fresh-{time.time_ns()}", "a-long-password-123"
    with paused_replay(replicated):
        created = requests.post(
            f"{url}/api/2.0/mlflow/users/create", json={"username": name, "password": password}, auth=admin, timeout=10
        )
        assert created.ok, created.text
        answer = requests.get(
            f"{url}/api/2.0/mlflow/users/get", params={"username": name}, auth=(name, password), timeout=10
        )
        assert answer.status_code == 200, answer.text


def _stock_store_with(platform: LocalPlatform, monkeypatch: pytest.MonkeyPatch):
    """What ``mlflow server --read-replica-backend-store-uri`` builds while it starts (its
    initialize_backend_stores; on an exception the CLI exits 1), retrying once instead of for ~100 s."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import mlflow.store.db.utils
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    monkeypatch.setattr(mlflow.store.db.utils, "MAX_RETRY_COUNT", 1)
    ports = platform.state.ports
    primary = platform.database_uri()
    return SqlAlchemyStore(
        primary, "s3://unused", read_db_uri=primary.replace(f":{ports.postgres}/", f":{ports.postgres_replica}/")
    )


@pytest.mark.slow
def test_a_dead_replica_costs_users_nothing_and_up_brings_it_back(
    replicated: LocalPlatform, client, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment = client.create_experiment(f"dead-replica-{time.time_ns()}")
    replicated.replica().stop()
    try:
        started = time.perf_counter()
        for _ in range(3):
            run = client.create_run(experiment)
            assert client.get_run(run.info.run_id).info.run_id == run.info.run_id
        assert len(client.search_runs([experiment])) == 3
        assert time.perf_counter() - started < 10  # refused at once: no request waits out a timeout
        assert not {s.name: s for s in replicated.status()}["replica"].healthy
        assert "read replica unreachable" in (replicated.logs / "tracking.log").read_text()
        # a pod restarting while the replica is down: with MLflow's own flag `mlflow server` exits
        with pytest.raises(sqlalchemy.exc.OperationalError, match="Connection refused"):
            _stock_store_with(replicated, monkeypatch)
        replicated.stop_tracking(log=lambda _: None)
        state = replicated.state
        replicated._start_tracking(state, lambda _: None, [])
        state.save(replicated._state_file)
        assert len(client.search_runs([experiment])) == 3
    finally:
        replicated.up(log=lambda _: None)
    assert {s.name: s for s in replicated.status()}["replica"].healthy
    _wait_caught_up(replicated)
    assert len(client.search_runs([experiment])) == 3


@pytest.mark.parametrize(
    ("message", "code", "breaker_opens"),
    [
        ("connection to server lost", "TEMPORARILY_UNAVAILABLE", True),
        ("canceling statement due to conflict with recovery", "TEMPORARILY_UNAVAILABLE", False),
        ("Run 'abc' not found", "RESOURCE_DOES_NOT_EXIST", False),
        ('column "x" does not exist', "BAD_REQUEST", False),
    ],
)
def test_what_the_replica_got_wrong_is_asked_again_of_the_primary(message, code, breaker_opens) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2

    calls, reasons = [], []

    def search() -> str:
        used = replica_reads._on_replica.get()
        calls.append(used is not None)
        if used is not None:  # what the routed session maker does when it hands out the replica
            used.append("replica session")
            raise MlflowException(message, error_code=getattr(databricks_pb2, code))
        return "from the primary"

    breaker = replica_reads.Breaker()
    assert replica_reads._replica_read(search, breaker, reasons.append)() == "from the primary"
    assert calls == [True, False] and breaker.closed is not breaker_opens
    assert reasons == ["failed" if code == "TEMPORARILY_UNAVAILABLE" else "retried"]


def test_an_error_of_the_primary_is_not_asked_again() -> None:
    """A replica read the breaker already sent to the primary: its error is the answer."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import BAD_REQUEST

    calls = []

    def search() -> None:
        calls.append(1)  # no replica session handed out
        raise MlflowException("bad filter", error_code=BAD_REQUEST)

    with pytest.raises(MlflowException, match="bad filter"):
        replica_reads._replica_read(search, replica_reads.Breaker(), None)()
    assert calls == [1]


def test_the_replica_benchmark_reports_the_median_of_its_rounds_and_every_error() -> None:
    from benchmarks.read_replica import markdown

    def level(op: str, rate: float, p95: float, errors: int = 0) -> dict:
        return {"operation": op, "clients": 8, "throughput_per_s": rate, "p95_ms": p95, "errors": errors}

    rounds = [
        {"primary": [level("search", 10, 100)], "replica": [level("search", 12, 90, errors=1)]},
        {"replica": [level("search", 20, 80)], "primary": [level("search", 30, 300)]},
        {"primary": [level("search", 20, 200)], "replica": [level("search", 16, 70)]},
    ]
    row = markdown({"rounds": rounds}).splitlines()[-1]
    assert row == "| search | 8 | 200 ms, 20.0/s | 80 ms, 16.0/s (1 errors) | 0.80× |"
