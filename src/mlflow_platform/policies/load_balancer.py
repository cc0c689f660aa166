"""The ALB: HTTPS with a modern TLS policy (HTTP only to redirect), access logs, protected in prod."""

from __future__ import annotations

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

from ._helpers import PRODUCTION_SCHEMA, as_list

MODERN_TLS = (
    "ELBSecurityPolicy-TLS13-1-2-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-Res-2021-06",
    "ELBSecurityPolicy-TLS13-1-3-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-Ext1-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-Ext2-2021-06",
    "ELBSecurityPolicy-TLS13-1-3-FIPS-2023-04",
    "ELBSecurityPolicy-TLS13-1-2-FIPS-2023-04",
)
LISTENER = "aws:lb/listener:Listener"
ALB = "aws:lb/loadBalancer:LoadBalancer"


def _https_only(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != LISTENER:
        return
    allowed = args.get_config().get("allowedSslPolicies") or list(MODERN_TLS)
    protocol = args.props.get("protocol")
    if protocol == "HTTPS":
        if args.props.get("sslPolicy") not in allowed:
            report(f"HTTPS listener uses TLS policy {args.props.get('sslPolicy')!r}; use one of {', '.join(allowed)}")
        return
    actions = as_list(args.props.get("defaultActions"))
    redirects = actions and all(
        a.get("type") == "redirect" and (a.get("redirect") or {}).get("protocol") == "HTTPS" for a in actions
    )
    if not redirects:
        report(f"{protocol} listener on port {args.props.get('port')} serves traffic; it may only redirect to HTTPS")


def _access_logs(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == ALB and not (args.props.get("accessLogs") or {}).get("enabled"):
        report("access logs are off (accessLogs.enabled)")


def _deletion_protection(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if (
        args.resource_type == ALB
        and args.get_config().get("production")
        and args.props.get("enableDeletionProtection") is not True
    ):
        report("deletion protection is off in production (enableDeletionProtection)")


POLICIES = [
    ResourceValidationPolicy(
        name="alb-https-only",
        description="Listeners speak HTTPS with TLS 1.2+/1.3, or redirect HTTP to HTTPS.",
        validate=_https_only,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=PolicyConfigSchema(
            properties={"allowedSslPolicies": {"type": "array", "items": {"type": "string"}}}
        ),
        remediation_steps="Use protocol HTTPS with loadBalancer.sslPolicy ELBSecurityPolicy-TLS13-1-2-2021-06; "
        "make port 80 a redirect to HTTPS.",
    ),
    ResourceValidationPolicy(
        name="alb-access-logs",
        description="The load balancer writes access logs.",
        validate=_access_logs,
        enforcement_level=EnforcementLevel.MANDATORY,
        remediation_steps="Set accessLogs {bucket, enabled: true}.",
    ),
    ResourceValidationPolicy(
        name="alb-production-deletion-protection",
        description="The production load balancer cannot be deleted by accident.",
        validate=_deletion_protection,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=PRODUCTION_SCHEMA,
        remediation_steps="Set loadBalancer.deletionProtection: true in the prod stack.",
    ),
]
