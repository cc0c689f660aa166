"""The renderer: one pure function, secrets by reference, pools via env, gunicorn-tuned."""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from mlflow_platform.config import from_config_values, load_stack_file
from mlflow_platform.server_spec import (
    ADMIN_PASSWORD,
    APP_DB_PASSWORD_ENV,
    DB_OWNER_PASSWORD,
    DB_PASSWORD,
    FLASK_SECRET_KEY,
    RDS_CA_BUNDLE,
    Endpoints,
    render_migration,
    render_server,
)

from .paths import ROOT

SECRET = "a-very-secret-admin-password"
ENDPOINTS = Endpoints(db_host="mlflow.cluster-abc.eu-west-1.rds.amazonaws.com", bucket="acme-mlflow-prod")


@pytest.fixture
def prod():
    return load_stack_file(ROOT / "stacks/Pulumi.prod.yaml", secrets={"adminPassword": SECRET}).config


def option(argv, name):
    return argv[argv.index(name) + 1]


def test_render_is_pure(prod) -> None:
    assert render_server(prod, ENDPOINTS) == render_server(prod, ENDPOINTS)


def test_pool_settings_go_through_env_not_the_uri(prod) -> None:
    spec = render_server(prod, ENDPOINTS)
    uri = option(spec.argv, "--backend-store-uri")
    assert "pool" not in uri and "overflow" not in uri
    env = {e.name: e.value for e in spec.env}
    assert env["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"] == "2"  # the benchmarked default
    assert env["MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"] == "1"
    assert env["MLFLOW_SQLALCHEMYSTORE_POOL_RECYCLE"] == "1800"


def test_no_secret_value_is_rendered(prod) -> None:
    spec = render_server(prod, ENDPOINTS)
    rendered = " ".join(spec.argv) + " ".join(str(e.value) for e in spec.env) + (spec.auth_ini or "")
    assert SECRET not in rendered
    assert ":@" not in rendered and "password=" not in rendered.lower()
    by_name = {e.name: e for e in spec.env}
    assert by_name["PGPASSWORD"].secret == DB_PASSWORD
    assert by_name["MLFLOW_FLASK_SERVER_SECRET_KEY"].secret == FLASK_SECRET_KEY
    assert by_name["MLFLOW_AUTH_ADMIN_PASSWORD"].secret == ADMIN_PASSWORD
    assert set(spec.secret_refs) == {DB_PASSWORD, FLASK_SECRET_KEY, ADMIN_PASSWORD}


def test_database_url_verifies_the_rds_certificate_and_uses_the_app_role(prod) -> None:
    """libpq's `require` encrypts but accepts any certificate; only `verify-full` checks the CA and
    the host name (https://www.postgresql.org/docs/current/libpq-ssl.html, table 34.1). AWS
    documents the global bundle for it (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/UsingWithRDS.SSL.html)."""
    uri = option(render_server(prod, ENDPOINTS).argv, "--backend-store-uri")
    assert uri == (
        "postgresql+psycopg://mlflow_app@mlflow.cluster-abc.eu-west-1.rds.amazonaws.com:5432/mlflow"
        f"?sslmode=verify-full&sslrootcert={RDS_CA_BUNDLE}"
    )
    assert "mlflow_app@" in render_server(prod, ENDPOINTS).auth_ini


def test_the_image_ships_the_rds_ca_bundle_readable_by_the_server_user() -> None:
    dockerfile = (ROOT / "server" / "Dockerfile").read_text()
    add = next(line for line in dockerfile.splitlines() if line.startswith("ADD ") and RDS_CA_BUNDLE in line)
    assert "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem" in add
    # A remote ADD is 0600 root-owned unless told otherwise; the server runs as uid 10001.
    assert "--chmod=0644" in add and dockerfile.startswith("# syntax=docker/dockerfile:")


def test_migration_runs_as_the_owner_and_grants_the_app_role(prod) -> None:
    migration = render_migration(prod, ENDPOINTS)
    assert option(migration.argv, "--backend-store-uri").startswith("postgresql+psycopg://mlflow@")
    assert option(migration.argv, "--app-role") == "mlflow_app"
    by_name = {e.name: e.secret for e in migration.env}
    assert by_name["PGPASSWORD"] == DB_OWNER_PASSWORD
    assert by_name[APP_DB_PASSWORD_ENV] == DB_PASSWORD
    assert DB_OWNER_PASSWORD not in render_server(prod, ENDPOINTS).secret_refs


def test_the_migrations_index_builds_end_well_before_its_job_is_killed(prod) -> None:
    """A build still running at the Job's activeDeadlineSeconds dies with the pod (and fails the
    deploy); the budget leaves the deadline's last 20 minutes to the snapshot and migrations."""
    from typer.testing import CliRunner

    from mlflow_platform.cli import app
    from mlflow_platform.infra.components.tracking_server import JOB_DEADLINE_SECONDS

    argv = render_migration(prod, ENDPOINTS).argv
    budget = float(option(argv, "--index-build-budget"))
    assert 0 < budget <= JOB_DEADLINE_SECONDS - 20 * 60
    unreachable = [re.sub(r"@[^/]+/", "@127.0.0.1:1/", a) for a in argv[1:]]
    result = CliRunner().invoke(app, unreachable, env={"PGPASSWORD": "x"}, terminal_width=200)
    assert result.exit_code == 1 and "database preparation failed" in result.output, result.output  # not a usage error


def test_gunicorn_is_the_server_with_tuned_options(prod) -> None:
    spec = render_server(prod, ENDPOINTS)
    opts = option(spec.argv, "--gunicorn-opts")
    assert "--worker-class=gthread" in opts and "--threads=2" in opts  # the measured default
    assert "--keep-alive=75" in opts and "--timeout=600" in opts
    assert "--max-requests=2000" in opts and "--max-requests-jitter=200" in opts
    assert option(spec.argv, "--workers") == "4"
    assert "--uvicorn-opts" not in spec.argv


def test_no_request_header_sets_script_name_or_path_info(prod) -> None:
    """gunicorn maps SCRIPT_NAME and PATH_INFO request headers into the environ for peers in
    forwarded_allow_ips (loopback by default): "It is important that your front-end proxy
    configuration ensures that the headers defined here can not be passed directly from the client"
    (gunicorn settings, forwarder_headers). Nothing in front of the server sets them: none is taken."""
    from gunicorn.config import Config

    opts = option(render_server(prod, ENDPOINTS).argv, "--gunicorn-opts")
    config = Config()
    parsed = config.parser().parse_args(shlex.split(opts))
    config.set("forwarder_headers", parsed.forwarder_headers)  # as gunicorn applies a command-line value
    assert config.forwarder_headers == []


def test_usage_data_stays_home_unless_the_stack_opts_in(prod) -> None:
    env = {e.name: e.value for e in render_server(prod, ENDPOINTS).env}
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    opted = prod.model_copy(update={"server": prod.server.model_copy(update={"telemetry": True})})
    assert {e.name: e.value for e in render_server(opted, ENDPOINTS).env}["MLFLOW_DISABLE_TELEMETRY"] == "false"


def test_artifacts_are_proxied_to_the_bucket_prefix(prod) -> None:
    spec = render_server(prod, ENDPOINTS)
    assert "--serve-artifacts" in spec.argv
    assert option(spec.argv, "--artifacts-destination") == "s3://acme-mlflow-prod/prod"
    assert "MLFLOW_S3_ENDPOINT_URL" not in {e.name for e in spec.env}  # real S3: no override


def test_allowed_hosts_come_from_env_with_port_variants(prod) -> None:
    spec = render_server(prod, ENDPOINTS)
    env = {e.name: e.value for e in spec.env}
    assert env["MLFLOW_SERVER_ALLOWED_HOSTS"] == "mlflow.example.com,mlflow.example.com:*"
    assert "--allowed-hosts" not in spec.argv  # mlflow refuses it together with --gunicorn-opts


def test_auth_ini_is_read_by_mlflow_itself(prod, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.server.auth.config import read_auth_config

    spec = render_server(prod, ENDPOINTS)
    assert "--app-name" in spec.argv and option(spec.argv, "--app-name") == "platform-auth"
    ini = tmp_path / "basic_auth.ini"
    ini.write_text(spec.auth_ini)
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(ini))
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", SECRET)
    auth = read_auth_config()
    assert auth.database_uri.startswith("postgresql+psycopg://mlflow_app@")
    assert make_url(auth.database_uri).database == "mlflow_auth"
    assert auth.auth_cache_ttl_seconds == 60
    assert auth.default_permission == "READ"
    assert auth.admin_password == SECRET
    parsed = configparser.ConfigParser()
    parsed.read_string(spec.auth_ini)
    assert "admin_password" not in parsed["mlflow"]


def test_job_execution_runs_on_the_primary_replica_only() -> None:
    config = from_config_values(
        {
            "mlflow-platform:environment": "dev",
            "mlflow-platform:artifacts": {"prefix": "dev"},
            "mlflow-platform:server": {"jobExecution": True},
        },
        source="test",
    )
    primary = {e.name: e.value for e in render_server(config, ENDPOINTS, primary=True).env}
    other = {e.name: e.value for e in render_server(config, ENDPOINTS, primary=False).env}
    assert primary["MLFLOW_SERVER_JOB_ENABLE_PERIODIC_TASKS"] == "true"
    assert primary["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"
    assert other["MLFLOW_SERVER_JOB_ENABLE_PERIODIC_TASKS"] == "false"
    assert other["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


def test_resolve_env_requires_every_secret(prod) -> None:
    spec = render_server(prod, ENDPOINTS)
    with pytest.raises(KeyError, match="db-password"):
        spec.resolve_env({FLASK_SECRET_KEY: "x", ADMIN_PASSWORD: "y"})


def test_the_running_local_server_executes_exactly_the_rendered_command(platform) -> None:
    """Proves the server starts with what the renderer produced: argv and env, verbatim."""
    import psutil

    spec = platform.server_spec()
    process = psutil.Process(platform.state.pids["tracking"])
    cmdline = process.cmdline()
    assert tuple(cmdline[-len(spec.argv) + 1 :]) == spec.argv[1:]
    assert Path(cmdline[1]).name == spec.argv[0] == "mlflow"
    environ = process.environ()
    for var in spec.env:
        if var.secret is None:
            assert environ[var.name] == var.value, var.name
        else:
            assert environ[var.name], var.name
    assert Path(spec.auth_config_path).read_text() == spec.auth_ini


def test_trace_archival_config_is_read_by_mlflow_itself(prod, tmp_path: Path) -> None:
    """The rendered file goes through MLflow's own loader (the one MLFLOW_TRACE_ARCHIVAL_CONFIG feeds)."""
    from mlflow.tracing.trace_archival_config import load_trace_archival_server_config

    config = prod.model_copy(
        update={
            "tracing": prod.tracing.model_copy(update={"archive_after": "30d"}),
            "server": prod.server.model_copy(update={"job_execution": True}),
        }
    )
    spec = render_server(config, ENDPOINTS)
    env = {e.name: e.value for e in spec.env}
    path = env["MLFLOW_TRACE_ARCHIVAL_CONFIG"]
    (tmp_path / "archival.yaml").write_text(spec.files[path])
    loaded = load_trace_archival_server_config(tmp_path / "archival.yaml")
    assert loaded.enabled and loaded.retention == "30d" and loaded.interval_seconds == 300
    assert loaded.location == "s3://acme-mlflow-prod/prod/trace-archive"
    assert "MLFLOW_TRACE_ARCHIVAL_CONFIG" not in {e.name for e in render_server(prod, ENDPOINTS).env}


def test_trace_archival_needs_the_job_runner() -> None:
    from mlflow_platform.config import ConfigError

    document = {
        "mlflow-platform:environment": "dev",
        "mlflow-platform:artifacts": {"bucket": "acme-mlflow-dev", "prefix": "dev"},
        "mlflow-platform:tracing": {"archiveAfter": "30d"},
    }
    with pytest.raises(ConfigError, match=r"tracing\.archiveAfter.*server\.jobExecution"):
        from_config_values(document, source="test")
