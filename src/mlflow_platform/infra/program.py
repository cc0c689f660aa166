"""The Pulumi program. Thin: read and validate the stack config, then wire the components.

`pulumi up --stack <env>` runs it through `__main__.py`; tests and `mlflow-platform plan` call
`main()` under Pulumi's mocks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws
from pulumi.runtime.config import CONFIG, get_config, get_config_env, is_config_secret

from ..alb_identity import key_endpoint
from ..config import PROJECT, ConfigError, StackConfig, from_config_values
from .components.artifact_store import ArtifactStore
from .components.cluster import Cluster, ClusterAccess
from .components.database import Database
from .components.iam import GithubCiRoles, Irsa, MigrationRole, ServerRole, TeamsRole, WorkloadBoundary
from .components.image import ServerImage
from .components.load_balancer import LoadBalancer
from .components.monitoring import Monitoring
from .components.network import Network
from .components.promotion_lock import PromotionLock
from .components.scheduled_runbooks import ScheduledRunbooks
from .components.server_secrets import ServerSecrets
from .components.tracking_server import (
    APP,
    MIGRATION_ACCOUNT,
    TrackingServer,
    TrackingServerArgs,
    deregistration_delay,
)


def load_config() -> StackConfig:
    """The stack's ``mlflow-platform:*`` values through the same model the local platform uses,
    plus what a deployment needs beyond it (cluster, hostname, certificate)."""
    prefix = f"{PROJECT}:"
    values = {}
    secret_keys = set()
    # Every key the engine handed over (the CLI passes PULUMI_CONFIG; mocks set CONFIG), so a
    # misspelt key is reported instead of silently ignored.
    for key in sorted({*CONFIG.get(), *get_config_env()}):
        if not key.startswith(prefix):
            continue
        values[key] = _decode(get_config(key))
        if is_config_secret(key):
            secret_keys.add(key[len(prefix) :])
    source = f"stack {pulumi.get_stack()}"
    try:
        config = from_config_values(values, source=source, secret_keys=secret_keys)
    except ConfigError as exc:
        raise pulumi.RunError(str(exc)) from None
    problems = config.deployment_problems()
    if not pulumi.Config("aws").get_object("allowedAccountIds"):
        # One AWS account per environment (docs/decisions/0008): the provider then refuses any other.
        problems.append(("aws:allowedAccountIds", "is required: the one AWS account of this environment"))
    if problems:
        raise pulumi.RunError(str(ConfigError(source, problems)))
    return config


def _decode(raw):
    """Structured values arrive JSON-encoded."""
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


@dataclass
class Foundation:
    """The AWS layer the Kubernetes workloads stand on."""

    network: Network
    cluster: Cluster
    store: ArtifactStore
    database: Database
    server_role: ServerRole
    migration_role: MigrationRole
    lb: LoadBalancer
    irsa: Irsa


def main(project_root: Path | None = None) -> dict:
    config = load_config()
    env = config.environment
    region = aws.get_region_output().region
    account_id = aws.get_caller_identity_output().account_id
    base = foundation(config, account_id, region)
    image = ServerImage("image", config.image, env, project_root=project_root or Path.cwd())
    secrets = ServerSecrets(
        "server-secrets",
        env,
        admin_username=config.server.admin_username,
        admin_password=config.admin_password.get_secret_value() if config.admin_password else None,
        recovery_window_days=7 if config.database.deletion_protection else 0,
    )
    tracking = tracking_server(config, base, image, secrets)
    ScheduledRunbooks(
        "runbooks",
        config,
        server=tracking,
        image=image.ref,
        db_host=base.database.address,
        bucket=base.store.bucket_name,
        provider=base.cluster.provider,
    )
    if config.teams:
        team_sync(config, base, tracking, image, account_id, region)
    monitoring = Monitoring(
        "monitoring",
        config.monitoring,
        env,
        region=region,
        account_id=account_id,
        alb_arn_suffix=base.lb.arn_suffix,
        target_group_arn_suffix=base.lb.target_group_arn_suffix,
        db_identifier=base.database.instance_identifier,
        replica_identifier=base.database.replica_identifier,
        replica_lag_seconds=config.database.read_replica.lag_alarm_seconds if config.database.read_replica else None,
        bucket_name=base.store.bucket_name,
        connection_budget=config.connection_budget,
    )
    lock = PromotionLock("promotion-lock", env)
    outputs = stack_outputs(config, base, image, secrets, monitoring, lock)
    if config.github.repository:
        ci = GithubCiRoles("ci", config.github, env, lock_table_arn=lock.table_arn, account_id=account_id)
        if config.cluster and config.cluster.create:
            ClusterAccess("cluster-access", base.cluster.name_out, ci.roles)
        outputs.update(
            ciPreviewRoleArn=ci.preview_role_arn,
            ciDriftRoleArn=ci.drift_role_arn,
            ciDeployRoleArn=ci.deploy_role_arn,
        )
        if ci.promote_role_arn is not None:
            outputs["ciPromoteRoleArn"] = ci.promote_role_arn
    for name, value in outputs.items():
        pulumi.export(name, value)
    return outputs


def team_sync(config: StackConfig, base: Foundation, tracking: TrackingServer, image, account_id, region) -> None:
    """Teams, after each rollout: their role for the users' secrets, and the Job that syncs them."""
    from .components.team_sync import TEAMS_ACCOUNT, TeamSync

    role = TeamsRole(
        "teams-role",
        config.environment,
        account_id=account_id,
        region=region,
        irsa=base.irsa,
        service_account=TEAMS_ACCOUNT,
    )
    TeamSync("teams", config, server=tracking, image=image.ref, role_arn=role.arn, provider=base.cluster.provider)


def foundation(config: StackConfig, account_id: pulumi.Output[str], region: pulumi.Output[str]) -> Foundation:
    env = config.environment
    assert config.cluster is not None  # deployment_problems guarantees it
    boundary = WorkloadBoundary("boundary", env)
    network = Network("network", config.network, env)
    cluster = Cluster(
        "cluster",
        config.cluster,
        env,
        account_id=account_id,
        region=region,
        vpc_id=network.vpc_id,
        subnet_ids=network.private_subnet_ids,
        boundary_arn=boundary.arn,
    )
    store = ArtifactStore("artifacts", config.artifacts, env, account_id=account_id)
    network.s3_gateway(region, [store.bucket_arn, store.log_bucket_arn])
    database = Database(
        "database",
        config.database,
        env,
        vpc_id=network.vpc_id,
        subnet_ids=network.private_subnet_ids,
        client_security_group_id=cluster.security_group_id,
    )
    server_role = ServerRole(
        "server-role",
        env,
        bucket_arn=store.bucket_arn,
        prefix=config.artifacts.prefix,
        kms_key_arn=store.kms_key_arn,
        oidc_provider_arn=cluster.oidc_provider_arn,
        oidc_issuer=cluster.oidc_issuer,
        namespace=config.namespace,
        service_account=APP,
        boundary_arn=boundary.arn,
    )
    irsa = Irsa(cluster.oidc_provider_arn, cluster.oidc_issuer, config.namespace, boundary.arn)
    migration_role = MigrationRole(
        "migration-role",
        env,
        instance_arn=database.instance_arn,
        instance_identifier=database.instance_identifier,
        irsa=irsa,
        service_account=MIGRATION_ACCOUNT,
    )
    lb = load_balancer(config, network, store)
    return Foundation(network, cluster, store, database, server_role, migration_role, lb, irsa)


def load_balancer(config: StackConfig, network: Network, store: ArtifactStore) -> LoadBalancer:
    secret = config.sso_client_secret
    return LoadBalancer(
        "lb",
        config.load_balancer,
        config.environment,
        vpc_id=network.vpc_id,
        vpc_cidr=network.vpc_cidr,
        subnet_ids=network.private_subnet_ids if config.load_balancer.internal else network.public_subnet_ids,
        target_port=config.server.port,
        log_bucket=store.log_bucket_name,
        deregistration_delay=deregistration_delay(config),
        sso=config.sso,
        sso_client_secret=pulumi.Output.secret(secret.get_secret_value()) if secret else None,
    )


def tracking_server(
    config: StackConfig, base: Foundation, image: ServerImage, secrets: ServerSecrets
) -> TrackingServer:
    return TrackingServer(
        "tracking",
        config,
        TrackingServerArgs(
            image=image.ref,
            db_host=base.database.address,
            db_replica_host=base.database.replica_address,
            bucket=base.store.bucket_name,
            role_arn=base.server_role.arn,
            db_password=base.database.app_password,
            db_owner_password=base.database.password,
            db_instance=base.database.instance_identifier,
            migration_role_arn=base.migration_role.arn,
            flask_secret_key=secrets.flask_secret_key,
            admin_password=secrets.admin_password,
            target_group_arn=base.lb.target_group_arn,
            alb_security_group_id=base.lb.security_group_id,
            vpc_cidr=base.network.vpc_cidr,
            alb_subnet_cidrs=(
                base.network.private_subnet_cidrs if config.load_balancer.internal else base.network.public_subnet_cidrs
            ),
            provider=base.cluster.provider,
            depends_on=[r for r in (base.cluster.lb_controller,) if r is not None],
            alb_arn=base.lb.arn,
            alb_key_endpoint=aws.get_region_output().region.apply(key_endpoint),
        ),
    )


#: Beyond the permission cache's TTL: a worker's clock tick, the request's own time.
SMOKE_GRANT_MARGIN_SECONDS = 5


def stack_outputs(
    config: StackConfig,
    base: Foundation,
    image: ServerImage,
    secrets: ServerSecrets,
    monitoring: Monitoring,
    lock: PromotionLock,
) -> dict:
    """What `pulumi stack output` shows: endpoints and ARNs, never a secret value."""
    store = base.store
    outputs: dict = {
        "environment": config.environment,
        "trackingUrl": base.lb.url,
        "loadBalancerDnsName": base.lb.dns_name,
        "bucketName": store.bucket_name,
        "artifactRoot": pulumi.Output.concat("s3://", store.bucket_name, f"/{config.artifacts.prefix}"),
        "databaseEndpoint": base.database.address,
        "databaseSecretArn": base.database.secret_arn,
        **({"databaseReplicaEndpoint": base.database.replica_address} if base.database.replica_address else {}),
        "adminSecretArn": secrets.admin_secret_arn,
        "serverRoleArn": base.server_role.arn,
        "alarmTopicArn": monitoring.topic_arn,
        "image": image.ref,
        "promotionLock": pulumi.Output.concat("dynamodb://", lock.table_name),
        "connectionBudget": config.connection_budget,
        "maxConnections": config.database.effective_max_connections,
        # How long the smoke suite waits for a new grant to reach every worker (each keeps its
        # permission answers for the TTL): the deploy workflow passes it on.
        "smokeGrantWaitSeconds": config.server.permission_cache_ttl_seconds + SMOKE_GRANT_MARGIN_SECONDS,
    }
    return outputs
