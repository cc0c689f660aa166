"""The stack config model: every stack file parses, and bad values name their key and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mlflow_platform.config import ConfigError, StackConfig, from_config_values, load_stack_file

from .paths import ROOT

STACK_FILES = sorted((ROOT / "stacks").glob("*.yaml"))


def base_values(**sections) -> dict:
    values = {"mlflow-platform:environment": "dev", "mlflow-platform:artifacts": {"prefix": "dev"}}
    values.update({f"mlflow-platform:{k}": v for k, v in sections.items()})
    return values


def problems(values: dict, **kwargs) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        from_config_values(values, source="test", **kwargs)
    return dict(info.value.problems)


def write_stack(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "Pulumi.bad.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    return path


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda p: p.name)
def test_every_stack_file_parses(path: Path) -> None:
    config = load_stack_file(path).config
    assert isinstance(config, StackConfig)
    assert config.server.basic_auth
    assert config.connection_budget <= config.database.effective_max_connections - config.database.reserved_connections


def test_the_three_deployed_stacks_exist() -> None:
    names = {p.name for p in STACK_FILES}
    assert {"Pulumi.dev.yaml", "Pulumi.staging.yaml", "Pulumi.prod.yaml", "local.yaml"} <= names


def test_prod_is_sized_above_dev() -> None:
    dev = load_stack_file(ROOT / "stacks/Pulumi.dev.yaml").config
    prod = load_stack_file(ROOT / "stacks/Pulumi.prod.yaml").config
    assert prod.server.replicas >= 2 > dev.server.replicas
    assert prod.database.effective_max_connections > dev.database.effective_max_connections


def test_connection_budget_over_max_connections_names_the_key(tmp_path: Path) -> None:
    path = write_stack(
        tmp_path, base_values(database={"instanceClass": "db.t4g.small", "poolSize": 20, "maxOverflow": 40})
    )
    with pytest.raises(ConfigError) as info:
        load_stack_file(path)
    message = str(info.value)
    assert "database.poolSize" in message
    assert "exceeds max_connections 202" in message
    assert "lower database.poolSize/maxOverflow" in message


def test_budget_counts_replica_ceiling_and_the_server_parent_process() -> None:
    config = from_config_values(
        base_values(
            server={"replicas": 2, "maxReplicas": 3, "workers": 4},
            database={"instanceClass": "db.r6g.large", "poolSize": 5, "maxOverflow": 5},
        ),
        source="test",
    )
    # 3 replicas x (4 workers + 1 parent) x 4 engines (tracking, registry, jobs, auth) x 10
    assert config.connection_budget == 3 * 5 * 4 * 10


def test_keep_alive_must_exceed_load_balancer_idle_timeout() -> None:
    found = problems(base_values(server={"keepAliveSeconds": 60}, loadBalancer={"idleTimeoutSeconds": 60}))
    assert "server.keepAliveSeconds" in found
    assert "at least 65" in found["server.keepAliveSeconds"]


def test_short_admin_password_is_refused() -> None:
    found = problems(base_values(), secret_keys={"adminPassword"}, secrets={"adminPassword": "short-pass"})
    assert "12 characters" in found["adminPassword"]


def test_admin_password_in_plain_text_is_refused(tmp_path: Path) -> None:
    path = write_stack(tmp_path, {**base_values(), "mlflow-platform:adminPassword": "a-long-enough-password"})
    with pytest.raises(ConfigError) as info:
        load_stack_file(path)
    assert "adminPassword: is stored in plain text" in str(info.value)
    assert "pulumi config set --secret" in str(info.value)


def test_encrypted_admin_password_is_accepted_offline(tmp_path: Path) -> None:
    path = write_stack(tmp_path, {**base_values(), "mlflow-platform:adminPassword": {"secure": "v1:abc=="}})
    loaded = load_stack_file(path)
    assert loaded.encrypted_keys == {"adminPassword"}
    assert loaded.config.admin_password is None  # unknown until the CLI decrypts it
    decrypted = load_stack_file(path, secrets={"adminPassword": "correct-horse-battery"})
    assert decrypted.config.admin_password.get_secret_value() == "correct-horse-battery"


@pytest.mark.parametrize(
    ("sections", "key", "fragment"),
    [
        ({"database": {"poolSzie": 5}}, "database.poolSzie", "unknown key"),
        ({"server": {"workers": 0}}, "server.workers", "greater than or equal to 1"),
        ({"loadBalancer": {"allowedCidrs": ["10.0.0.0/33"]}}, "loadBalancer.allowedCidrs", "not a CIDR"),
        ({"artifacts": {"prefix": "dev", "bucket": "Bad_Bucket"}}, "artifacts.bucket", "not a valid S3 bucket"),
        ({"database": {"instanceClass": "db.x9.huge"}}, "database.maxConnections", "set database.maxConnections"),
        ({"loadBalancer": {"hostname": "ml.example.com"}}, "server.allowedHosts", "must include"),
        ({"server": {"replicas": 3, "maxReplicas": 2}}, "server", "raise maxReplicas"),
    ],
)
def test_bad_values_name_the_key(sections: dict, key: str, fragment: str) -> None:
    found = problems(base_values(**sections))
    assert key in found, found
    assert fragment in found[key]


def test_unknown_top_level_key_is_named() -> None:
    found = problems({**base_values(), "mlflow-platform:databse": {}})
    assert "unknown key" in found["databse"]


def test_missing_required_keys_are_named() -> None:
    found = problems({})
    assert set(found) == {"environment", "artifacts.prefix"}


def test_local_stack_fits_embedded_postgres_with_no_exemption() -> None:
    config = load_stack_file(ROOT / "stacks/local.yaml").config
    assert config.environment == "local"
    assert config.database.max_connections == 100  # what the embedded server is started with
    assert config.connection_budget <= 100 - config.database.reserved_connections


def test_defaults_alone_make_a_valid_stack() -> None:
    config = from_config_values(base_values(), source="test")
    assert config.connection_budget <= config.database.effective_max_connections - config.database.reserved_connections
    # A gthread worker's threads can all hold a connection at once without waiting on the pool.
    assert config.database.pool_size + config.database.max_overflow >= config.server.threads


def test_a_pool_smaller_than_the_threads_is_refused_with_the_fix() -> None:
    found = problems(base_values(server={"threads": 4}, database={"poolSize": 2, "maxOverflow": 1}))
    assert "database.maxOverflow" in found
    assert "below server.threads (4)" in found["database.maxOverflow"]
    assert "at least 2" in found["database.maxOverflow"]


def test_defaults_are_the_benchmarked_ones() -> None:
    """benchmarks/tracking_load.py chose these (README, "Load benchmark"); change them with new figures."""
    config = from_config_values(base_values(), source="test")
    s, d = config.server, config.database
    assert (s.workers, s.worker_class, s.threads, s.auth_cache_ttl_seconds) == (4, "gthread", 2, 60)
    assert (d.pool_size, d.max_overflow) == (2, 1)
    assert d.pool_size + d.max_overflow == s.threads + 1


@pytest.mark.parametrize("schedule", ["99 * * * *", "0 0 * *", "0 0 0 * * *", "every hour"])
def test_a_runbook_schedule_kubernetes_would_reject_is_refused_by_key(schedule: str) -> None:
    found = problems(base_values(runbooks={"reapSchedule": schedule}))
    assert "runbooks.reapSchedule" in found and "'17 * * * *'" in found["runbooks.reapSchedule"]


def test_runbook_schedules_accept_macros_and_names() -> None:
    config = from_config_values(
        base_values(runbooks={"reapSchedule": "@hourly", "gcSchedule": "0 5 * * SUN"}), source="test"
    )
    assert (config.runbooks.reap_schedule, config.runbooks.gc_schedule) == ("@hourly", "0 5 * * SUN")


def test_the_stack_file_schema_is_current_and_every_stack_file_follows_it() -> None:
    import jsonschema

    from mlflow_platform.schema import SCHEMA_FILE, schema_text

    path = ROOT / "stacks" / SCHEMA_FILE
    assert path.read_text() == schema_text(), "run `make schema` and commit stacks/stack.schema.json"
    schema = json.loads(schema_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for stack in sorted((ROOT / "stacks").glob("*.yaml")):
        assert stack.read_text().startswith("# yaml-language-server: $schema="), f"{stack.name}: no $schema line"
        assert [e.message for e in validator.iter_errors(yaml.safe_load(stack.read_text()))] == [], stack.name
    typo = {"config": {"mlflow-platform:environment": "dev", "mlflow-platform:servr": {}}}
    assert not validator.is_valid(typo)


def test_sections_come_from_the_model() -> None:
    from mlflow_platform.config import _SECTIONS, SECRET_KEYS, StackConfig

    assert set(_SECTIONS.values()) | set(SECRET_KEYS.values()) == set(StackConfig.model_fields)
    assert SECRET_KEYS == {"adminPassword": "admin_password", "ssoClientSecret": "sso_client_secret"}


def test_a_misspelt_key_gets_a_did_you_mean() -> None:
    with pytest.raises(ConfigError) as refused:
        from_config_values(
            {
                "mlflow-platform:environment": "dev",
                "mlflow-platform:artifacts": {"prefix": "dev"},
                "mlflow-platform:server": {"replcas": 2},
            },
            source="test",
        )
    assert "server.replcas: unknown key; did you mean `replicas`?" in str(refused.value)
    with pytest.raises(ConfigError, match="databse: unknown key; did you mean `database`"):
        from_config_values({"mlflow-platform:environment": "dev", "mlflow-platform:databse": {}}, source="test")


TEAM_A = {"name": "search", "members": ["ana"]}


@pytest.mark.parametrize(
    ("teams", "key", "fragment"),
    [
        ([TEAM_A, {"name": "ranking", "members": ["ana"]}], "teams[1].members", "add 'search' to teams[1].readers"),
        ([TEAM_A, {"name": "ranking", "readers": ["serch"]}], "teams[1].readers", "unknown team 'serch'"),
        ([{"name": "Search_Team"}], "teams.0.name", "must match the pattern"),
        ([{"name": "api"}], "teams.0.name", "is reserved"),
        ([{"name": "default"}], "teams.0.name", "MLflow's default workspace"),
        ([{"name": "search", "members": ["ana smith"]}], "teams.0.members", "is not a username"),
        ([TEAM_A, TEAM_A], "teams[1].name", "declared twice"),
        ([{"name": "search", "admins": ["admin"]}], "teams[0].admins", "server.adminUsername"),
        ([TEAM_A, {"name": "ranking", "workspace": "search"}], "teams[1].workspace", "already team 'search'"),
        ([{"name": "search", "experimentPrefix": "search"}], "teams.0.experimentPrefix", "match pattern"),
    ],
)
def test_team_mistakes_name_the_key_and_the_fix(teams: list, key: str, fragment: str) -> None:
    found = problems(base_values(teams=teams))
    assert key in found, found
    assert fragment in found[key], found[key]


def test_teams_turn_workspaces_on_and_close_the_default_permission() -> None:
    without = from_config_values(base_values(), source="test")
    assert (without.workspaces, without.default_permission) == (False, "READ")
    teams = from_config_values(base_values(teams=[TEAM_A]), source="test")
    assert (teams.workspaces, teams.default_permission) == (True, "NO_PERMISSIONS")
    explicit = from_config_values(base_values(teams=[TEAM_A], server={"defaultPermission": "READ"}), source="test")
    assert explicit.default_permission == "READ"  # stated, so kept (the policy pack refuses it in prod)
