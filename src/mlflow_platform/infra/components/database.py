"""RDS PostgreSQL: private, TLS-only, encrypted, backed up, observable, inside the connection budget."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from ...config import DatabaseConfig
from ...database.parameters import tuned_parameters
from ._common import tags


class Database(pulumi.ComponentResource):
    address: pulumi.Output[str]
    port: pulumi.Output[int]
    instance_identifier: pulumi.Output[str]
    instance_arn: pulumi.Output[str]
    security_group_id: pulumi.Output[str]
    password: pulumi.Output[str]
    app_password: pulumi.Output[str]
    secret_arn: pulumi.Output[str]
    #: With ``readReplica``: the replica's endpoint and identifier (None without one).
    replica_address: pulumi.Output[str] | None = None
    replica_identifier: pulumi.Output[str] | None = None

    def __init__(
        self,
        name: str,
        config: DatabaseConfig,
        environment: str,
        *,
        vpc_id: pulumi.Input[str],
        subnet_ids: pulumi.Input[list[str]],
        client_security_group_id: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("mlflow-platform:aws:Database", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        base = tags(environment, "database")
        identifier = f"mlflow-{environment}"

        key = aws.kms.Key(
            f"{name}-key",
            description=f"mlflow {environment} database",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            tags=base,
            opts=child,
        )
        subnets, sg = self._network(name, vpc_id, subnet_ids, client_security_group_id, base, child)
        # Nodes that do not carry the cluster security group (Karpenter, self-managed groups) reach
        # PostgreSQL through the groups the stack names (EKS docs, "cluster security group requirements").
        for i, group in enumerate(config.client_security_group_ids):
            _admit(
                f"{name}-from-client-{i}",
                sg,
                group,
                f"mlflow server pods ({group}, database.clientSecurityGroupIds)",
                child,
            )

        params = self._parameter_group(name, config, base, child)

        password = random.RandomPassword(f"{name}-password", length=40, special=False, opts=child)
        # The server's own role (created by the migration Job): the master password stays out of its pods.
        app_password = random.RandomPassword(f"{name}-app-password", length=40, special=False, opts=child)
        # A final snapshot id must be new each time an instance is deleted: a fixed one makes the
        # second teardown fail ("DBSnapshotAlreadyExists"). A random suffix, stable in the state.
        self._snapshot_suffix = random.RandomId(f"{name}-final-snapshot-id", byte_length=4, opts=child)
        instance = self._instance(name, config, identifier, key, subnets, sg, params, password, base)
        if config.read_replica is not None:
            replica = self._replica(name, config, identifier, instance, key, sg, params, base)
            self.replica_address, self.replica_identifier = replica.address, replica.identifier
        secret = self._credentials(name, config, environment, key, instance, (password, app_password), base, child)

        self.address = instance.address
        self.port = instance.port
        self.instance_identifier = instance.identifier
        self.instance_arn = instance.arn
        self.security_group_id = sg.id
        self.password = pulumi.Output.secret(password.result)
        self.app_password = pulumi.Output.secret(app_password.result)
        self.secret_arn = secret.arn
        self.register_outputs({"address": self.address, "instanceArn": self.instance_arn, "secretArn": self.secret_arn})

    def _network(
        self,
        name: str,
        vpc_id: pulumi.Input[str],
        subnet_ids: pulumi.Input[list[str]],
        client_security_group_id: pulumi.Input[str],
        base: dict,
        child: pulumi.ResourceOptions,
    ) -> tuple[aws.rds.SubnetGroup, aws.ec2.SecurityGroup]:
        subnets = aws.rds.SubnetGroup(f"{name}-subnets", subnet_ids=subnet_ids, tags=base, opts=child)
        sg = aws.ec2.SecurityGroup(
            f"{name}-sg", vpc_id=vpc_id, description="PostgreSQL from the mlflow server only", tags=base, opts=child
        )
        _admit(f"{name}-from-server", sg, client_security_group_id, "mlflow server pods", child)
        return subnets, sg

    def _parameter_group(
        self, name: str, config: DatabaseConfig, base: dict, child: pulumi.ResourceOptions
    ) -> aws.rds.ParameterGroup:
        family = f"postgres{config.engine_version.split('.')[0]}"
        params = aws.rds.ParameterGroup(
            f"{name}-params",
            family=family,
            description="mlflow: TLS, slow queries",
            parameters=[
                {"name": "rds.force_ssl", "value": "1"},
                {"name": "log_min_duration_statement", "value": str(config.slow_query_ms)},
                {"name": "shared_preload_libraries", "value": "pg_stat_statements", "apply_method": "pending-reboot"},
                {"name": "pg_stat_statements.track", "value": "top"},
                {
                    "name": "max_connections",
                    "value": str(config.effective_max_connections),
                    "apply_method": "pending-reboot",
                },
                # what benchmarks/data_scale.py measured MLflow to need beyond RDS's defaults
                *({"name": k, "value": v} for k, v in tuned_parameters().items()),
            ],
            tags=base,
            opts=child,
        )
        return params

    def _instance(
        self,
        name: str,
        config: DatabaseConfig,
        identifier: str,
        key: aws.kms.Key,
        subnets: aws.rds.SubnetGroup,
        sg: aws.ec2.SecurityGroup,
        params: aws.rds.ParameterGroup,
        password: random.RandomPassword,
        base: dict,
    ) -> aws.rds.Instance:
        instance = aws.rds.Instance(
            f"{name}-instance",
            identifier=identifier,
            engine="postgres",
            engine_version=config.engine_version,
            instance_class=config.instance_class,
            allocated_storage=config.allocated_storage_gb,
            max_allocated_storage=config.max_allocated_storage_gb,
            storage_type="gp3",
            storage_encrypted=True,
            kms_key_id=key.arn,
            db_name=config.tracking_database,
            username=config.username,
            password=pulumi.Output.secret(password.result),
            db_subnet_group_name=subnets.name,
            vpc_security_group_ids=[sg.id],
            parameter_group_name=params.name,
            publicly_accessible=False,
            multi_az=config.multi_az,
            deletion_protection=config.deletion_protection,
            backup_retention_period=config.backup_retention_days,
            backup_window="02:00-03:00",
            maintenance_window="sun:03:30-sun:04:30",
            copy_tags_to_snapshot=True,
            skip_final_snapshot=not config.final_snapshot,
            final_snapshot_identifier=(
                pulumi.Output.concat(identifier, "-final-", self._snapshot_suffix.hex)
                if config.final_snapshot
                else None
            ),
            delete_automated_backups=not config.final_snapshot,
            performance_insights_enabled=True,
            performance_insights_kms_key_id=key.arn,
            performance_insights_retention_period=config.performance_insights_retention_days,
            enabled_cloudwatch_logs_exports=["postgresql", "upgrade"],
            auto_minor_version_upgrade=True,
            # The stack pins a major; changing it is deliberate. RDS refuses a major change without this
            # (ModifyDBInstance AllowMajorVersionUpgrade), and the auto-named parameter group of the new
            # family is created first and handed over in the same call.
            allow_major_version_upgrade=True,
            apply_immediately=config.apply_immediately,
            ca_cert_identifier="rds-ca-rsa2048-g1",
            tags=base,
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["password"]),
        )
        return instance

    def _replica(
        self,
        name: str,
        config: DatabaseConfig,
        identifier: str,
        source: aws.rds.Instance,
        key: aws.kms.Key,
        sg: aws.ec2.SecurityGroup,
        params: aws.rds.ParameterGroup,
        base: dict,
    ) -> aws.rds.Instance:
        """A read replica of ``source``: roles, passwords, data and encryption come from it. RDS
        creates replicas without backups (the source's are the point-in-time recovery); a
        same-region replica is placed in the source's subnet group (the provider's
        ``replicate_source_db``). The source's security group and parameter group: TLS only, and a
        hot standby refuses to start with a lower max_connections than its primary's."""
        replica = config.read_replica
        assert replica is not None
        return aws.rds.Instance(
            f"{name}-replica",
            identifier=f"{identifier}-replica",
            replicate_source_db=source.identifier,
            instance_class=replica.instance_class or config.instance_class,
            max_allocated_storage=config.max_allocated_storage_gb,
            storage_type="gp3",
            # Encrypted with the source's key: a same-region replica takes no key of its own
            # (CreateDBInstanceReadReplica, KmsKeyId: "don't specify a value" in the same region).
            storage_encrypted=True,
            vpc_security_group_ids=[sg.id],
            parameter_group_name=params.name,
            publicly_accessible=False,
            # Losing it loses no data: reads go to the primary until it is back (replica_reads.py).
            multi_az=False,
            backup_retention_period=0,
            skip_final_snapshot=True,
            deletion_protection=False,
            performance_insights_enabled=True,
            performance_insights_kms_key_id=key.arn,
            performance_insights_retention_period=config.performance_insights_retention_days,
            enabled_cloudwatch_logs_exports=["postgresql"],
            auto_minor_version_upgrade=True,
            apply_immediately=config.apply_immediately,
            ca_cert_identifier="rds-ca-rsa2048-g1",
            tags=base,
            # its identifier is fixed: a change RDS cannot make in place must delete it first
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )

    def _credentials(
        self,
        name: str,
        config: DatabaseConfig,
        environment: str,
        key: aws.kms.Key,
        instance: aws.rds.Instance,
        passwords: tuple[random.RandomPassword, random.RandomPassword],
        base: dict,
        child: pulumi.ResourceOptions,
    ) -> aws.secretsmanager.Secret:
        """Both roles' credentials, for on-call (the pods get theirs from Kubernetes Secrets)."""
        password, app_password = passwords
        secret = aws.secretsmanager.Secret(
            f"{name}-credentials",
            name=f"mlflow/{environment}/database",
            kms_key_id=key.arn,
            # A name in its recovery window cannot be reused: a torn-down dev stack could not come back
            # for a week. Production keeps the window (deletion protection is its signal).
            recovery_window_in_days=7 if config.deletion_protection else 0,
            tags=base,
            opts=child,
        )
        aws.secretsmanager.SecretVersion(
            f"{name}-credentials",
            secret_id=secret.id,
            secret_string=pulumi.Output.json_dumps(
                {
                    "engine": "postgres",
                    "host": instance.address,
                    "port": instance.port,
                    "username": config.username,
                    "password": pulumi.Output.secret(password.result),
                    "appUsername": config.app_username,
                    "appPassword": pulumi.Output.secret(app_password.result),
                    "dbname": config.tracking_database,
                    "authDbname": config.auth_database,
                }
            ),
            opts=child,
        )
        return secret


def _admit(
    name: str, sg: aws.ec2.SecurityGroup, group: pulumi.Input[str], description: str, opts: pulumi.ResourceOptions
) -> None:
    """PostgreSQL's port from one security group."""
    aws.vpc.SecurityGroupIngressRule(
        name,
        security_group_id=sg.id,
        ip_protocol="tcp",
        from_port=5432,
        to_port=5432,
        referenced_security_group_id=group,
        description=description,
        opts=opts,
    )
