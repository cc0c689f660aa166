"""RDS PostgreSQL: private, encrypted, backed up, TLS-only; highly available in production."""

from __future__ import annotations

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from ._helpers import PRODUCTION_SCHEMA, as_list, of_type

INSTANCE = "aws:rds/instance:Instance"
GENERATED = ("random:index/randomPassword:RandomPassword",)


def is_replica(props) -> bool:
    """A read replica: no backups of its own (the source's are the recovery point), no password
    of its own, and nothing lost when it is deleted (CreateDBInstanceReadReplica)."""
    return bool(props.get("replicateSourceDb"))


def _encrypted_private(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != INSTANCE:
        return
    if args.props.get("storageEncrypted") is not True:
        report("storage is not encrypted (storageEncrypted)")
    if args.props.get("publiclyAccessible") is True:
        report("the instance is publicly accessible (publiclyAccessible)")


def _backups(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != INSTANCE or is_replica(args.props):
        return
    minimum = int(args.get_config().get("minimumDays", 7))
    days = int(args.props.get("backupRetentionPeriod") or 0)
    if days < minimum:
        report(f"backupRetentionPeriod is {days} days; at least {minimum} required")


def _production_ha(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != INSTANCE or not args.get_config().get("production") or is_replica(args.props):
        return
    if args.props.get("deletionProtection") is not True:
        report("deletionProtection is off in production")
    if args.props.get("multiAz") is not True:
        report("multiAz is off in production")
    if args.props.get("skipFinalSnapshot") is True:
        report("skipFinalSnapshot is on in production: deleting the instance would lose the data")


def _force_ssl(args: StackValidationArgs, report: ReportViolation) -> None:
    for instance in of_type(args, INSTANCE):
        groups = (instance.property_dependencies or {}).get("parameterGroupName") or []
        groups = [g for g in groups if g.resource_type == "aws:rds/parameterGroup:ParameterGroup"]
        if not groups:
            report("the instance uses no parameter group of this stack, so rds.force_ssl is not set", instance.urn)
            continue
        for group in groups:
            params = {p.get("name"): str(p.get("value")) for p in as_list(group.props.get("parameters"))}
            if params.get("rds.force_ssl") != "1":
                report(f"parameter group {group.name} does not set rds.force_ssl = 1", instance.urn)


def _generated_password(args: StackValidationArgs, report: ReportViolation) -> None:
    for instance in of_type(args, INSTANCE):
        if instance.props.get("manageMasterUserPassword") is True or is_replica(instance.props):
            continue
        sources = (instance.property_dependencies or {}).get("password") or []
        if not any(source.resource_type in GENERATED for source in sources):
            report(
                "the master password is not generated (random.RandomPassword) nor RDS-managed: it is "
                "written somewhere in plain text",
                instance.urn,
            )


POLICIES = [
    ResourceValidationPolicy(
        name="rds-encrypted-private",
        description="RDS storage is encrypted and the instance is not public.",
        validate=_encrypted_private,
        enforcement_level=EnforcementLevel.MANDATORY,
        remediation_steps="Set storageEncrypted: true (with a KMS key) and publiclyAccessible: false.",
    ),
    ResourceValidationPolicy(
        name="rds-backup-retention",
        description="Automated backups are kept long enough for point-in-time recovery.",
        validate=_backups,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=PolicyConfigSchema(properties={"minimumDays": {"type": "integer", "default": 7}}),
        remediation_steps="Raise database.backupRetentionDays in the stack file.",
    ),
    ResourceValidationPolicy(
        name="rds-production-ha",
        description="Production databases are Multi-AZ, deletion-protected, final-snapshotted.",
        validate=_production_ha,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=PRODUCTION_SCHEMA,
        remediation_steps="Set database.multiAz, deletionProtection and finalSnapshot to true in the prod stack.",
    ),
    StackValidationPolicy(
        name="rds-force-ssl",
        description="The database refuses connections without TLS.",
        validate=_force_ssl,
        enforcement_level=EnforcementLevel.MANDATORY,
        remediation_steps="Attach a parameter group with rds.force_ssl = 1.",
    ),
    StackValidationPolicy(
        name="rds-password-not-plaintext",
        description="The master password is generated, never written in config or code.",
        validate=_generated_password,
        enforcement_level=EnforcementLevel.MANDATORY,
        remediation_steps="Feed password from a random.RandomPassword (kept secret) or use manageMasterUserPassword.",
    ),
]
