"""The ALB: HTTPS with a modern TLS policy (HTTP only to redirect), access logs, protected in prod."""

from __future__ import annotations

import configparser
import json
import re

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from ..server_spec import SSO_AUTHORIZATION
from ..sso import MACHINE_PATHS
from ._helpers import PRODUCTION_SCHEMA, as_list, of_type

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
LISTENER_RULE = "aws:lb/listenerRule:ListenerRule"
ALB = "aws:lb/loadBalancer:LoadBalancer"
ALB_ARN = re.compile(r"^arn:aws[a-z-]*:elasticloadbalancing:[a-z0-9-]+:\d{12}:loadbalancer/app/[^/]+/[0-9a-f]+$")


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


def _server_files(args: StackValidationArgs) -> dict[str, str]:
    found: dict[str, str] = {}
    for config_map in of_type(args, "kubernetes:core/v1:ConfigMap"):
        found.update({k: v for k, v in (config_map.props.get("data") or {}).items() if isinstance(v, str)})
    return found


def _sso_active(files: dict[str, str]) -> bool:
    parser = configparser.ConfigParser()
    parser.read_string(files.get("basic_auth.ini", ""))
    return parser.has_section("mlflow") and parser["mlflow"].get("authorization_function") == SSO_AUTHORIZATION


def _forwards_without_login(actions: list) -> bool:
    kinds = [a.get("type") for a in actions]
    return "forward" in kinds and "authenticate-oidc" not in kinds


def _sso_login_on_browser_paths(args: StackValidationArgs, report: ReportViolation) -> None:
    """With SSO, every path but the client ones goes through authenticate-oidc, and the server
    accepts identity headers signed by this stack's ALB only."""
    files = _server_files(args)
    if not _sso_active(files):
        return
    for listener in of_type(args, LISTENER):
        if listener.props.get("protocol") == "HTTPS" and _forwards_without_login(
            as_list(listener.props.get("defaultActions"))
        ):
            report("sso is on but the HTTPS listener's default action forwards without authenticate-oidc", listener.urn)
    for rule in of_type(args, LISTENER_RULE):
        if not _forwards_without_login(as_list(rule.props.get("actions"))):
            continue
        paths = [
            v
            for c in as_list(rule.props.get("conditions"))
            for v in as_list((c.get("pathPattern") or {}).get("values"))
        ]
        browser = [p for p in paths if p not in MACHINE_PATHS] or ([] if paths else ["(every path)"])
        if browser:
            report(f"listener rule {rule.name} forwards browser paths {browser} without authenticate-oidc", rule.urn)
    signer = json.loads(files.get("sso.json") or "{}").get("signer")
    if not (isinstance(signer, str) and ALB_ARN.match(signer)):
        report(f"the server's sso.json does not pin an ALB as the signer of identity headers (signer={signer!r})")


POLICIES = [
    StackValidationPolicy(
        name="alb-sso-login-on-browser-paths",
        description="With SSO, browser paths pass the ALB's OIDC login and the server pins the ALB as signer.",
        validate=_sso_login_on_browser_paths,
        enforcement_level=EnforcementLevel.MANDATORY,
        remediation_steps="Keep the rendered listener (authenticate-oidc, then forward) and the machine-paths rule "
        f"({', '.join(MACHINE_PATHS)}); render sso.json with the ALB's ARN as signer.",
    ),
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
