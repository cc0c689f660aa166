"""Network and IAM: no database port open to the world, no `*` on `*`, the server role on its prefix."""

from __future__ import annotations

import fnmatch
import json

from pulumi_policy import (
    EnforcementLevel,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from ._helpers import SERVER_APP, as_list, of_type, statements

WORLD = ("0.0.0.0/0", "::/0")
DB_PORT = 5432
POLICY_TYPES = ("aws:iam/rolePolicy:RolePolicy", "aws:iam/policy:Policy", "aws:iam/role:Role")


def _covers(rule: dict, port: int) -> bool:
    if rule.get("ipProtocol", rule.get("protocol")) in ("-1", "all"):
        return True
    low, high = rule.get("fromPort"), rule.get("toPort")
    return low is not None and high is not None and int(low) <= port <= int(high)


def _db_port_closed(args: ResourceValidationArgs, report: ReportViolation) -> None:
    port = int(args.get_config().get("port", DB_PORT))
    rules: list[dict] = []
    if args.resource_type == "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule":
        rules = [dict(args.props, cidrBlocks=[args.props.get("cidrIpv4")], ipv6CidrBlocks=[args.props.get("cidrIpv6")])]
    elif args.resource_type == "aws:ec2/securityGroupRule:SecurityGroupRule" and args.props.get("type") == "ingress":
        rules = [dict(args.props)]
    elif args.resource_type == "aws:ec2/securityGroup:SecurityGroup":
        rules = as_list(args.props.get("ingress"))
    for rule in rules:
        cidrs = as_list(rule.get("cidrBlocks")) + as_list(rule.get("ipv6CidrBlocks"))
        if _covers(rule, port) and any(c in WORLD for c in cidrs):
            report(f"ingress opens port {port} to the internet ({', '.join(c for c in cidrs if c in WORLD)})")


def _no_star_star(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == "aws:iam/rolePolicyAttachment:RolePolicyAttachment":
        if str(args.props.get("policyArn", "")).endswith(":policy/AdministratorAccess"):
            report("AdministratorAccess grants every action on every resource")
        return
    if args.resource_type not in POLICY_TYPES:
        return
    documents = (
        [args.props.get("policy")]
        if args.resource_type != "aws:iam/role:Role"
        else [p.get("policy") for p in as_list(args.props.get("inlinePolicies"))]
    )
    for document in documents:
        for statement in statements(document):
            actions, resources = as_list(statement.get("Action")), as_list(statement.get("Resource"))
            if statement.get("Effect") == "Allow" and "*" in actions and "*" in resources:
                report("a statement allows every action (*) on every resource (*)")


def _server_role_scoped(args: StackValidationArgs, report: ReportViolation) -> None:
    """The role the mlflow-server service account assumes may touch objects under a prefix only."""
    server_roles = {
        role.urn: role
        for role in of_type(args, "aws:iam/role:Role")
        if any(
            "system:serviceaccount:" in str(v) and str(v).endswith(f":{SERVER_APP}")
            for s in statements(role.props.get("assumeRolePolicy"))
            for v in ((s.get("Condition") or {}).get("StringEquals") or {}).values()
        )
    }
    for policy in of_type(args, "aws:iam/rolePolicy:RolePolicy"):
        roles = [r for r in (policy.property_dependencies or {}).get("role") or [] if r.urn in server_roles]
        if not roles:
            continue
        for statement in statements(policy.props.get("policy")):
            actions = [a for a in as_list(statement.get("Action")) if str(a).startswith("s3:")]
            if not actions or statement.get("Effect") != "Allow":
                continue
            for resource in as_list(statement.get("Resource")):
                if resource == "*" or resource.endswith(":::*"):
                    report(f"server role grants {', '.join(actions)} on every bucket", policy.urn)
                elif "/" in resource and resource.split("/", 1)[1] in ("*", ""):
                    report(
                        f"server role grants {', '.join(actions)} on the whole bucket ({resource}), not a prefix",
                        policy.urn,
                    )
                elif (
                    "/" not in resource
                    and "s3:ListBucket" in actions
                    and "s3:prefix" not in str(statement.get("Condition"))
                ):
                    report(f"server role may list the whole bucket {resource}; add an s3:prefix condition", policy.urn)


def _ci_roles_contained(args: StackValidationArgs, report: ReportViolation) -> None:
    """CI roles (trusting GitHub's OIDC tokens) take no wildcard subject, and whatever IAM they may
    manage on roles is this environment's roles, with their own roles denied."""
    ci_roles = {
        role.urn: role
        for role in of_type(args, "aws:iam/role:Role")
        if "token.actions.githubusercontent.com" in str(role.props.get("assumeRolePolicy"))
    }
    for role in ci_roles.values():
        for statement in statements(role.props.get("assumeRolePolicy")):
            conditions = statement.get("Condition") or {}
            subjects = [
                subject
                for operator in ("StringEquals", "StringLike")
                for subject in as_list((conditions.get(operator) or {}).get("token.actions.githubusercontent.com:sub"))
            ]
            wild = [s for s in subjects if "*" in str(s) or "?" in str(s)]
            if wild:
                report(f"role {role.props.get('name')} trusts any ref: {', '.join(wild)}", role.urn)
    for policy in of_type(args, "aws:iam/rolePolicy:RolePolicy"):
        roles = [ci_roles[r.urn] for r in (policy.property_dependencies or {}).get("role") or [] if r.urn in ci_roles]
        if roles:
            _check_ci_role_iam(policy, str(roles[0].props.get("name", "")), report)


def _check_ci_role_iam(policy, role_name: str, report: ReportViolation) -> None:
    env_prefix = role_name.split("-ci-")[0]  # mlflow-<env>
    role_grants, denied = [], []
    for statement in statements(policy.props.get("policy")):
        actions = [str(a) for a in as_list(statement.get("Action"))]
        resources = [str(r) for r in as_list(statement.get("Resource")) if ":role/" in str(r)]
        if statement.get("Effect") == "Deny" and _denies_every_change(statement):
            denied += resources
        elif statement.get("Effect") == "Allow" and any(a.startswith("iam:") for a in actions):
            role_grants += [r for r in resources if not r.endswith(":role/aws-service-role/*")]
    for resource in role_grants:
        if not resource.endswith(f":role/{env_prefix}-*"):
            report(f"{role_name} may change roles beyond {env_prefix}-* ({resource})", policy.urn)
    if role_grants and not any(r.endswith(f":role/{env_prefix}-ci-*") for r in denied):
        report(f"{role_name} may change its own role (deny IAM changes on {env_prefix}-ci-*)", policy.urn)


#: A Deny with a NotAction of only these still denies every change (reading stays allowed).
READ_ONLY_IAM = {"iam:Get*", "iam:List*"}


def _denies_every_change(statement: dict) -> bool:
    if "NotAction" in statement:
        return {str(a) for a in as_list(statement["NotAction"])} <= READ_ONLY_IAM
    return any(a in ("iam:*", "*") for a in as_list(statement.get("Action")))


ROLE_CREATION = {"iam:CreateRole", "iam:PutRolePolicy", "iam:AttachRolePolicy", "iam:PutRolePermissionsBoundary"}


def _workload_roles_bounded(args: StackValidationArgs, report: ReportViolation) -> None:
    """Roles the deploy role creates carry the boundary, and it may create or widen roles only with it."""
    for role in of_type(args, "aws:iam/role:Role"):
        trusts_github = "token.actions.githubusercontent.com" in str(role.props.get("assumeRolePolicy"))
        if not trusts_github and not role.props.get("permissionsBoundary"):
            report(f"role {role.props.get('name')} has no permissions boundary", role.urn)
    for policy in of_type(args, "aws:iam/rolePolicy:RolePolicy"):
        for statement in statements(policy.props.get("policy")):
            actions = {str(a) for a in as_list(statement.get("Action"))}
            grants = any(fnmatch.fnmatchcase(c.lower(), a.lower()) for a in actions for c in ROLE_CREATION)
            if statement.get("Effect") != "Allow" or not grants:
                continue
            condition = json.dumps(statement.get("Condition") or {})
            if "iam:PermissionsBoundary" not in condition:
                report(f"{policy.name} may create or widen roles without the permissions boundary", policy.urn)


POLICIES = [
    ResourceValidationPolicy(
        name="no-public-database-port",
        description="No security group opens PostgreSQL to 0.0.0.0/0 or ::/0.",
        validate=_db_port_closed,
        enforcement_level=EnforcementLevel.MANDATORY,
        remediation_steps="Admit the database port from the server's security group only.",
    ),
    ResourceValidationPolicy(
        name="iam-no-star-on-star",
        description="No IAM policy allows * actions on * resources.",
        validate=_no_star_star,
        enforcement_level=EnforcementLevel.MANDATORY,
        remediation_steps="Name the actions and resources the principal needs.",
    ),
    StackValidationPolicy(
        name="server-role-prefix-scoped",
        description="The server's role reaches only its bucket prefix.",
        validate=_server_role_scoped,
        enforcement_level=EnforcementLevel.MANDATORY,
        remediation_steps="Grant object actions on arn:aws:s3:::<bucket>/<prefix>/* and ListBucket with an "
        "s3:prefix condition.",
    ),
    StackValidationPolicy(
        name="iam-workload-roles-bounded",
        description="Every role the stack creates carries the workload boundary; roles are created only with it.",
        validate=_workload_roles_bounded,
        enforcement_level=EnforcementLevel.MANDATORY,
        remediation_steps="Pass WorkloadBoundary.arn as permissions_boundary; condition role-changing IAM "
        "actions on iam:PermissionsBoundary.",
    ),
    StackValidationPolicy(
        name="iam-ci-roles-contained",
        description="GitHub CI roles trust no wildcard ref and manage only their environment's roles, never their own.",
        validate=_ci_roles_contained,
        enforcement_level=EnforcementLevel.MANDATORY,
        remediation_steps="Trust exact environment:<name> subjects; grant IAM on role/mlflow-<env>-* and deny "
        "every IAM change (NotAction iam:Get*, iam:List*) on role/mlflow-<env>-ci-*.",
    ),
]
