"""Network and IAM: no database port open to the world, no `*` on `*`, the server role on its prefix."""

from __future__ import annotations

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
]
