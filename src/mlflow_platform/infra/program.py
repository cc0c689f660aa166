"""The Pulumi program. Thin: read and validate the stack config, then wire the components.

`pulumi up --stack <env>` runs it through `__main__.py`; tests and `mlflow-platform plan` call
`main()` under Pulumi's mocks.
"""

from __future__ import annotations

import json
from pathlib import Path

import pulumi
import pulumi_aws as aws
from pulumi.runtime.config import CONFIG, get_config, get_config_env, is_config_secret

from ..config import PROJECT, ConfigError, StackConfig, from_config_values
from .components.artifact_store import ArtifactStore
from .components.cluster import Cluster
from .components.database import Database
from .components.iam import GithubCiRoles, ServerRole
from .components.image import ServerImage
from .components.load_balancer import LoadBalancer
from .components.monitoring import Monitoring
from .components.network import Network
from .components.promotion_lock import PromotionLock
from .components.scheduled_runbooks import ScheduledRunbooks
from .components.server_secrets import ServerSecrets
from .components.tracking_server import APP, TrackingServer, TrackingServerArgs


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


def main(project_root: Path | None = None) -> dict:
    config = load_config()
    env = config.environment
    assert config.cluster is not None  # deployment_problems guarantees it
    identity = aws.get_caller_identity_output()
    region = aws.get_region_output().region

    network = Network("network", config.network, env)
    cluster = Cluster(
        "cluster",
        config.cluster,
        env,
        account_id=identity.account_id,
        region=region,
        vpc_id=network.vpc_id,
        subnet_ids=network.private_subnet_ids,
    )
    store = ArtifactStore("artifacts", config.artifacts, env, account_id=identity.account_id)
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
        namespace=config.cluster.namespace,
        service_account=APP,
    )
    image = ServerImage("image", config.image, env, project_root=project_root or Path.cwd())
    lb = LoadBalancer(
        "lb",
        config.load_balancer,
        env,
        vpc_id=network.vpc_id,
        vpc_cidr=network.vpc_cidr,
        subnet_ids=network.private_subnet_ids if config.load_balancer.internal else network.public_subnet_ids,
        target_port=config.server.port,
        log_bucket=store.log_bucket_name,
    )

    secrets = ServerSecrets(
        "server-secrets",
        env,
        admin_username=config.server.admin_username,
        admin_password=config.admin_password.get_secret_value() if config.admin_password else None,
    )
    tracking = TrackingServer(
        "tracking",
        config,
        TrackingServerArgs(
            image=image.ref,
            db_host=database.address,
            bucket=store.bucket_name,
            role_arn=server_role.arn,
            db_password=database.password,
            flask_secret_key=secrets.flask_secret_key,
            admin_password=secrets.admin_password,
            target_group_arn=lb.target_group_arn,
            alb_security_group_id=lb.security_group_id,
            vpc_cidr=network.vpc_cidr,
            provider=cluster.provider,
            depends_on=[r for r in (cluster.lb_controller,) if r is not None],
        ),
    )
    ScheduledRunbooks(
        "runbooks",
        config,
        server=tracking,
        image=image.ref,
        db_host=database.address,
        bucket=store.bucket_name,
        provider=cluster.provider,
    )
    monitoring = Monitoring(
        "monitoring",
        config.monitoring,
        env,
        region=region,
        alb_arn_suffix=lb.arn_suffix,
        target_group_arn_suffix=lb.target_group_arn_suffix,
        db_identifier=database.instance_identifier,
        connection_budget=config.connection_budget,
    )

    lock = PromotionLock("promotion-lock", env)

    outputs: dict = {
        "environment": env,
        "trackingUrl": lb.url,
        "loadBalancerDnsName": lb.dns_name,
        "bucketName": store.bucket_name,
        "artifactRoot": pulumi.Output.concat("s3://", store.bucket_name, f"/{config.artifacts.prefix}"),
        "databaseEndpoint": database.address,
        "databaseSecretArn": database.secret_arn,
        "adminSecretArn": secrets.admin_secret_arn,
        "serverRoleArn": server_role.arn,
        "alarmTopicArn": monitoring.topic_arn,
        "image": image.ref,
        "promotionLock": pulumi.Output.concat("dynamodb://", lock.table_name),
        "connectionBudget": config.connection_budget,
        "maxConnections": config.database.effective_max_connections,
    }
    if config.github.repository:
        ci = GithubCiRoles("ci", config.github, env, lock_table_arn=lock.table_arn)
        outputs.update(
            ciPreviewRoleArn=ci.preview_role_arn,
            ciDeployRoleArn=ci.deploy_role_arn,
            ciPromoteRoleArn=ci.promote_role_arn,
        )
    for name, value in outputs.items():
        pulumi.export(name, value)
    return outputs
