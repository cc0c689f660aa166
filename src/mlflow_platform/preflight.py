"""Read-only checks of an AWS account before a stack's first `pulumi up`: what the offline plan
cannot know. Each check passes, fails with the remedy, or is skipped with the reason; nothing is
created or changed (only Describe/Get/List/Head calls).

The AWS endpoint can be overridden with ``AWS_ENDPOINT_URL`` (boto3 reads it), which is how the
tests point every check at a local AWS API.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import boto3
import botocore.exceptions
import kubernetes.client.exceptions
import kubernetes.config.config_exception
import urllib3.exceptions

from .config import StackConfig
from .eks import kubeconfig
from .placeholders import placeholders

GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
NAT_EIPS_PER_AZ = 1


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # pass | fail | skip
    detail: str

    @classmethod
    def ok(cls, name: str, detail: str) -> Check:
        return cls(name, "pass", detail)

    @classmethod
    def bad(cls, name: str, detail: str) -> Check:
        return cls(name, "fail", detail)

    @classmethod
    def skip(cls, name: str, detail: str) -> Check:
        return cls(name, "skip", detail)


def titled(title: str):
    """The name a check reports under, also when it could not run."""

    def mark(function):
        function.title = title
        return function

    return mark


class Account:
    """boto3 clients for one region, created on first use."""

    def __init__(self, region: str):
        self.region = region
        self._clients: dict[str, object] = {}

    def __getattr__(self, service: str):
        if service.startswith("_"):
            raise AttributeError(service)
        if service not in self._clients:
            self._clients[service] = boto3.client(service, region_name=self.region)
        return self._clients[service]

    @property
    def account_id(self) -> str:
        return self.sts.get_caller_identity()["Account"]


@titled("example values")
def check_placeholders(stack_file: Path, config: StackConfig, aws: Account) -> Check:
    keys = placeholders(stack_file)
    if keys:
        return Check.bad("example values", f"still marked # CHANGE ME: {', '.join(keys)}; replace them")
    return Check.ok("example values", "none left")


@titled("RDS engine version")
def check_engine_version(stack_file: Path, config: StackConfig, aws: Account) -> Check:
    d = config.database
    options = aws.rds.describe_orderable_db_instance_options(Engine="postgres", DBInstanceClass=d.instance_class)
    versions = sorted({o["EngineVersion"] for o in options.get("OrderableDBInstanceOptions", [])})
    matching = [v for v in versions if v.split(".")[0] == d.engine_version]
    if not matching:
        return Check.bad(
            "RDS engine version",
            f"PostgreSQL {d.engine_version} is not orderable as "
            f"{d.instance_class} in {aws.region}; set database.engineVersion/instanceClass",
        )
    return Check.ok(
        "RDS engine version",
        f"PostgreSQL {d.engine_version} orderable as {d.instance_class} (newest minor {matching[-1]})",
    )


@titled("GitHub OIDC provider")
def check_github_oidc(stack_file: Path, config: StackConfig, aws: Account) -> Check:
    g = config.github
    if not g.repository:
        return Check.skip("GitHub OIDC provider", "no github.repository: no CI roles")
    if g.oidc_provider_arn:
        return Check.skip("GitHub OIDC provider", f"given: {g.oidc_provider_arn}")
    providers = aws.iam.list_open_id_connect_providers().get("OpenIDConnectProviderList", [])
    exists = any(p["Arn"].endswith(f"oidc-provider/{GITHUB_OIDC_HOST}") for p in providers)
    if exists and g.create_oidc_provider:
        return Check.bad(
            "GitHub OIDC provider",
            "the account has one already and this stack would create another "
            "(EntityAlreadyExists): set github.createOidcProvider: false",
        )
    if not exists and not g.create_oidc_provider:
        return Check.bad(
            "GitHub OIDC provider",
            "the account has none: set github.createOidcProvider: true in exactly one stack of this account",
        )
    return Check.ok("GitHub OIDC provider", "exists" if exists else "absent; this stack creates it")


@titled("TLS certificate")
def check_certificate(stack_file: Path, config: StackConfig, aws: Account) -> Check:
    lb = config.load_balancer
    if lb.certificate_arn:
        cert = aws.acm.describe_certificate(CertificateArn=lb.certificate_arn)["Certificate"]
        names = {cert.get("DomainName"), *cert.get("SubjectAlternativeNames", [])}
        if cert.get("Status") != "ISSUED":
            return Check.bad("TLS certificate", f"status {cert.get('Status')}; it must be ISSUED")
        if not any(_covers(name, lb.hostname or "") for name in names if name):
            return Check.bad("TLS certificate", f"covers {sorted(n for n in names if n)}, not {lb.hostname}")
        return Check.ok("TLS certificate", f"ISSUED, covers {lb.hostname}")
    if lb.route53_zone_id:
        zone = aws.route53.get_hosted_zone(Id=lb.route53_zone_id)["HostedZone"]
        zone_name = zone["Name"].rstrip(".")
        if not (lb.hostname or "").rstrip(".").endswith(zone_name):
            return Check.bad("TLS certificate", f"zone {zone_name} is not authoritative for {lb.hostname}")
        return Check.ok("TLS certificate", f"created and DNS-validated in zone {zone_name}")
    return Check.bad("TLS certificate", "neither loadBalancer.certificateArn nor loadBalancer.route53ZoneId")


def _covers(pattern: str, hostname: str) -> bool:
    if pattern.startswith("*."):
        return hostname.count(".") == pattern.count(".") and hostname.endswith(pattern[1:])
    return pattern == hostname


@titled("VPC and subnets")
def check_network(stack_file: Path, config: StackConfig, aws: Account) -> Check:
    n = config.network
    if n.create_vpc:
        return Check.skip("VPC and subnets", "the stack creates its VPC")
    found = aws.ec2.describe_subnets(SubnetIds=[*n.public_subnet_ids, *n.private_subnet_ids])["Subnets"]
    by_id = {s["SubnetId"]: s for s in found}
    problems = []
    for ids, tag in (
        (n.public_subnet_ids, "kubernetes.io/role/elb"),
        (n.private_subnet_ids, "kubernetes.io/role/internal-elb"),
    ):
        subnets = [by_id[i] for i in ids if i in by_id]
        if len({s["AvailabilityZone"] for s in subnets}) < 2:
            problems.append(f"{ids} span fewer than 2 AZs")
        untagged = [s["SubnetId"] for s in subnets if tag not in {t["Key"] for t in s.get("Tags", [])}]
        if untagged:
            problems.append(f"{', '.join(untagged)} lack the {tag} tag")
    if any(s["VpcId"] != n.vpc_id for s in found):
        problems.append(f"subnets outside {n.vpc_id}")
    if problems:
        return Check.bad("VPC and subnets", "; ".join(problems))
    return Check.ok("VPC and subnets", f"{len(found)} subnets in {n.vpc_id}, 2+ AZs, load-balancer role tags")


@titled("bucket names")
def check_bucket_names(stack_file: Path, config: StackConfig, aws: Account) -> Check:
    account = aws.account_id
    names = [
        config.artifacts.bucket or f"mlflow-{config.environment}-artifacts-{account}",
        f"mlflow-{config.environment}-logs-{account}",
    ]
    states = {}
    for name in names:
        try:
            aws.s3.head_bucket(Bucket=name, ExpectedBucketOwner=account)
            states[name] = "yours"
        except botocore.exceptions.ClientError as exc:
            code = exc.response["Error"]["Code"]
            states[name] = "free" if code in ("404", "NoSuchBucket") else "taken"
    taken = [n for n, s in states.items() if s == "taken"]
    if taken:
        return Check.bad("bucket names", f"{', '.join(taken)} belong to another account; set artifacts.bucket")
    return Check.ok("bucket names", ", ".join(f"{n} ({s})" for n, s in states.items()))


@titled("Secrets Manager names")
def check_secret_names(stack_file: Path, config: StackConfig, aws: Account) -> Check:
    waiting = []
    for name in (f"mlflow/{config.environment}/database", f"mlflow/{config.environment}/admin"):
        try:
            if aws.secretsmanager.describe_secret(SecretId=name).get("DeletedDate"):
                waiting.append(name)
        except botocore.exceptions.ClientError:
            continue  # absent: free to create
    if waiting:
        return Check.bad(
            "Secrets Manager names",
            f"{', '.join(waiting)} deleted and in their recovery window; "
            "restore them (aws secretsmanager restore-secret) or delete them for good",
        )
    return Check.ok("Secrets Manager names", "free or in use by this stack")


@titled("Elastic IPs for NAT")
def check_nat_quota(stack_file: Path, config: StackConfig, aws: Account) -> Check:
    n = config.network
    if not n.create_vpc:
        return Check.skip("Elastic IPs for NAT", "an existing VPC brings its own NAT")
    needed = n.availability_zones * NAT_EIPS_PER_AZ if n.nat_gateway_per_az else 1
    attributes = aws.ec2.describe_account_attributes(AttributeNames=["vpc-max-elastic-ips"])["AccountAttributes"]
    limit = next(
        int(a["AttributeValues"][0]["AttributeValue"])
        for a in attributes
        if a["AttributeName"] == "vpc-max-elastic-ips"
    )
    used = len(aws.ec2.describe_addresses()["Addresses"])
    if used + needed > limit:
        return Check.bad(
            "Elastic IPs for NAT",
            f"{needed} needed, {limit - used} of {limit} left; raise the quota or set network.natGatewayPerAz: false",
        )
    return Check.ok("Elastic IPs for NAT", f"{needed} needed, {limit - used} of {limit} left")


@titled("EKS cluster")
def check_existing_cluster(stack_file: Path, config: StackConfig, aws: Account) -> Check:
    c = config.cluster
    if c is None or c.create:
        return Check.skip("EKS cluster", "the stack creates its cluster")
    cluster = aws.eks.describe_cluster(name=c.name)["cluster"]
    issuer = (((cluster.get("identity") or {}).get("oidc") or {}).get("issuer") or "").removeprefix("https://")
    if not issuer:
        return Check.bad("EKS cluster", f"{c.name} has no OIDC issuer; IRSA needs one")
    providers = aws.iam.list_open_id_connect_providers().get("OpenIDConnectProviderList", [])
    if not any(p["Arn"].endswith(f"oidc-provider/{issuer}") for p in providers):
        return Check.bad(
            "EKS cluster", f"no IAM OIDC provider for {issuer}: `eksctl utils associate-iam-oidc-provider`"
        )
    return Check.ok("EKS cluster", f"{c.name}: IAM OIDC provider for IRSA present")


def _existing_cluster(config: StackConfig) -> str | None:
    c = config.cluster
    return None if c is None or c.create else c.name


@titled("EKS access entry")
def check_access_entry(stack_file: Path, config: StackConfig, aws: Account) -> Check:
    """Each CI role needs an access entry on an existing cluster, or its Kubernetes calls are
    refused (https://docs.aws.amazon.com/eks/latest/userguide/access-entries.html): deploy as a
    cluster admin, drift and PR previews as viewers (drift's refresh reads Secrets: AdminView)."""
    name = _existing_cluster(config)
    if name is None:
        return Check.skip("EKS access entry", "the stack creates its cluster and the CI roles' entries")
    if not config.github.repository:
        return Check.skip("EKS access entry", "no github.repository: no CI roles")
    mode = aws.eks.describe_cluster(name=name)["cluster"].get("accessConfig", {}).get("authenticationMode", "")
    if "API" not in mode.split("_AND_"):
        return Check.bad(
            "EKS access entry",
            f"{name} authenticates with {mode or 'CONFIG_MAP'} only: `aws eks update-cluster-config --name {name} "
            "--access-config authenticationMode=API_AND_CONFIG_MAP`",
        )
    roles = {purpose: _ci_role(aws, config.environment, purpose) for purpose in CI_ACCESS}
    if not any(roles.values()):
        return Check.skip(
            "EKS access entry",
            f"the CI roles do not exist yet: the first `pulumi up` creates them; then grant them on {name} "
            "(deploy AmazonEKSClusterAdminPolicy, drift AmazonEKSAdminViewPolicy, preview AmazonEKSViewPolicy)",
        )
    entries = set(_access_entries(aws, name)) if all(roles.values()) else set()
    results = [_ci_role_access(aws, name, purpose, roles[purpose], entries) for purpose in CI_ACCESS]
    problems = [text for ok, text in results if not ok]
    if problems:
        return Check.bad("EKS access entry", "; ".join(problems))
    return Check.ok("EKS access entry", "; ".join(text for _, text in results))


#: The access policies each CI role may hold on an existing cluster (the first is the one to grant).
CI_ACCESS = {
    "deploy": ("AmazonEKSClusterAdminPolicy", "AmazonEKSAdminPolicy"),
    "drift": ("AmazonEKSAdminViewPolicy",),
    "preview": ("AmazonEKSViewPolicy", "AmazonEKSAdminViewPolicy"),
}


def _ci_role(aws: Account, environment: str, purpose: str) -> str | None:
    """The CI role's ARN, or None before the first `pulumi up` has created it."""
    name = f"mlflow-{environment}-ci-{purpose}"
    try:
        return aws.iam.get_role(RoleName=name)["Role"]["Arn"]
    except aws.iam.exceptions.NoSuchEntityException:
        return None


def _ci_role_access(aws: Account, cluster: str, purpose: str, role: str | None, entries: set[str]) -> tuple[bool, str]:
    accepted = CI_ACCESS[purpose]
    if role is None:
        return (
            False,
            f"the {purpose} role does not exist yet: the first `pulumi up` creates it; then grant {accepted[0]}",
        )
    hint = _grant_hint(cluster, role, accepted[0])
    policies = _policies(aws, cluster, role, accepted) if role in entries else []
    if not policies:
        return False, f"{role} has no {' or '.join(accepted)} on {cluster}: {hint}"
    return True, f"{purpose}: {', '.join(policies)}"


def _grant_hint(cluster: str, role: str, policy: str) -> str:
    return (
        f"`aws eks create-access-entry --cluster-name {cluster} --principal-arn {role}` and `aws eks "
        f"associate-access-policy --cluster-name {cluster} --principal-arn {role} --access-scope type=cluster "
        f"--policy-arn arn:aws:eks::aws:cluster-access-policy/{policy}`"
    )


def _access_entries(aws: Account, cluster: str) -> list[str]:
    pages = aws.eks.get_paginator("list_access_entries").paginate(clusterName=cluster)
    return [arn for page in pages for arn in page.get("accessEntries", [])]


def _policies(aws: Account, cluster: str, role: str, accepted: tuple[str, ...]) -> list[str]:
    found = aws.eks.list_associated_access_policies(clusterName=cluster, principalArn=role)
    names = [p["policyArn"].rsplit("/", 1)[-1] for p in found.get("associatedAccessPolicies", [])]
    return [n for n in names if n in accepted]


LB_CONTROLLER = ("kube-system", "aws-load-balancer-controller")
#: DaemonSets whose presence means NetworkPolicies are enforced (another CNI or policy engine).
POLICY_ENGINES = ("calico-node", "cilium", "antrea-agent")


def cluster_api(config: StackConfig, aws: Account):
    """A Kubernetes API client for the stack's existing cluster: its kubeconfig context if the stack
    names one, else the same `aws eks get-token` kubeconfig the Pulumi provider uses."""
    from kubernetes import config as kube_config

    c = config.cluster
    assert c is not None and c.name is not None
    if c.kubeconfig_context:
        # KUBECONFIG read now: the library reads it once, at import.
        return kube_config.new_client_from_config(
            config_file=os.environ.get("KUBECONFIG"), context=c.kubeconfig_context
        )
    found = aws.eks.describe_cluster(name=c.name)["cluster"]
    ca = found["certificateAuthority"]["data"]
    return kube_config.new_client_from_config_dict(kubeconfig(c.name, found["endpoint"], ca))


def _read(call, *args):
    """The object, or None when the API says 404."""
    from kubernetes.client.exceptions import ApiException

    try:
        return call(*args, _request_timeout=10)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


@titled("LB controller")
def check_lb_controller(stack_file: Path, config: StackConfig, aws: Account) -> Check:
    """Its webhooks (failurePolicy: Fail) reject the server's Service and TargetGroupBinding when
    it is not running, and nothing registers pods with the ALB."""
    if _existing_cluster(config) is None:
        return Check.skip("LB controller", "the stack installs it in the cluster it creates")
    from kubernetes import client

    apps = client.AppsV1Api(cluster_api(config, aws))
    namespace, name = LB_CONTROLLER
    deployment = _read(apps.read_namespaced_deployment, name, namespace)
    if deployment is None:
        from .infra.components.cluster import LB_CONTROLLER_CHART_VERSION

        return Check.bad(
            "LB controller",
            f"no {namespace}/{name}: install the aws-load-balancer-controller chart {LB_CONTROLLER_CHART_VERSION} "
            "with its IRSA role (https://kubernetes-sigs.github.io/aws-load-balancer-controller/)",
        )
    available = deployment.status.available_replicas or 0
    if available < 1:
        return Check.bad(
            "LB controller",
            f"{namespace}/{name} has no available replica: `kubectl -n {namespace} describe deploy {name}`",
        )
    image = deployment.spec.template.spec.containers[0].image
    return Check.ok("LB controller", f"{available} available ({image.rsplit('/', 1)[-1]})")


@titled("NetworkPolicy enforcement")
def check_network_policy_enforcement(stack_file: Path, config: StackConfig, aws: Account) -> Check:
    """Without an enforcing agent NetworkPolicies are accepted and ignored: the server's and the
    runbooks' policies would silently do nothing. VPC CNI enforces them only with its network-policy
    agent on (https://docs.aws.amazon.com/eks/latest/userguide/cni-network-policy-configure.html)."""
    if _existing_cluster(config) is None:
        return Check.skip("NetworkPolicy enforcement", "the stack turns it on in the VPC CNI add-on it creates")
    from kubernetes import client

    apps = client.AppsV1Api(cluster_api(config, aws))
    for engine in POLICY_ENGINES:
        if _read(apps.read_namespaced_daemon_set, engine, "kube-system") is not None:
            return Check.ok("NetworkPolicy enforcement", f"kube-system/{engine} enforces NetworkPolicies")
    aws_node = _read(apps.read_namespaced_daemon_set, "aws-node", "kube-system")
    args = [a for c in (aws_node.spec.template.spec.containers if aws_node else []) for a in (c.args or [])]
    if "--enable-network-policy=true" in args:
        return Check.ok("NetworkPolicy enforcement", "VPC CNI's network-policy agent is on")
    return Check.bad(
        "NetworkPolicy enforcement",
        'nothing enforces NetworkPolicies: set enableNetworkPolicy: "true" in the vpc-cni add-on\'s '
        "configuration (`aws eks update-addon --addon-name vpc-cni --configuration-values "
        '\'{"enableNetworkPolicy": "true"}\'`)',
    )


@titled("SSO discovery")
def check_sso_discovery(stack_file: Path, config: StackConfig, aws: Account) -> Check:
    """The issuer's OpenID discovery document answers, names the configured endpoints, lists the scopes."""
    import requests

    sso = config.sso
    if sso is None:
        return Check.skip("SSO discovery", "no `sso` section: single sign-on is off")
    url = f"{sso.issuer.rstrip('/')}/.well-known/openid-configuration"
    answer = requests.get(url, timeout=10)
    if answer.status_code != 200:
        return Check.bad("SSO discovery", f"{url} answered {answer.status_code}; check sso.issuer")
    document = answer.json()
    configured = {
        "issuer": sso.issuer,
        "authorization_endpoint": sso.authorization_endpoint,
        "token_endpoint": sso.token_endpoint,
        "userinfo_endpoint": sso.user_info_endpoint,
    }
    wrong = [
        f"{key} is {document.get(key)!r}" for key, value in configured.items() if value and document.get(key) != value
    ]
    if wrong:
        return Check.bad("SSO discovery", "the IdP says " + "; ".join(wrong) + ": copy them into `sso`")
    missing = sorted(set(sso.scopes) - set(document.get("scopes_supported", sso.scopes)))
    if missing:
        return Check.bad("SSO discovery", f"the IdP does not list scopes {missing} (sso.scopes)")
    return Check.ok("SSO discovery", f"{url} matches; scopes {' '.join(sso.scopes)} supported")


@titled("deployable stack")
def check_deployable(stack_file: Path, config: StackConfig, aws: Account) -> Check:
    """What `pulumi up` would refuse (a secret the file lacks, a missing key), and an AWS account
    another stack beside this one also deploys to."""
    from .config import ConfigError, load_stack_file, shared_accounts

    try:
        loaded = load_stack_file(stack_file)
    except ConfigError as exc:
        return Check.bad("deployable stack", str(exc).replace("\n", " "))
    problems = loaded.deployment_problems() + shared_accounts(stack_file, loaded)
    if problems:
        return Check.bad("deployable stack", "; ".join(f"{key}: {message}" for key, message in problems))
    return Check.ok("deployable stack", "every value `pulumi up` needs is set")


@titled("AWS account")
def check_account(stack_file: Path, config: StackConfig, aws: Account) -> Check:
    """This environment alone in its account (docs/decisions/0008): the credentials are for the
    account the stack names, and no other environment's CI deploy role lives there."""
    from .config import load_stack_file

    allowed = load_stack_file(stack_file).account_ids
    account = aws.account_id
    if account not in allowed:
        return Check.bad("AWS account", f"credentials are for {account}; the stack allows {list(allowed)}")
    others = sorted(
        role["RoleName"]
        for page in aws.iam.get_paginator("list_roles").paginate()
        for role in page["Roles"]
        if _other_deploy_role(role["RoleName"], config.environment)
    )
    if others:
        return Check.bad(
            "AWS account",
            f"{account} also holds {', '.join(others)}: another environment's deploy role could reach this "
            "one; give each environment its own account",
        )
    return Check.ok("AWS account", f"{account}, no other environment's CI roles")


def _other_deploy_role(name: str, environment: str) -> bool:
    return name.startswith("mlflow-") and name.endswith("-ci-deploy") and name != f"mlflow-{environment}-ci-deploy"


#: Kubernetes minors EKS still supports, and the day standard support ends (EKS version calendar:
#: https://docs.aws.amazon.com/eks/latest/userguide/kubernetes-versions.html). Past it a STANDARD
#: cluster is upgraded by EKS; an EXTENDED one costs extra per hour.
EKS_STANDARD_SUPPORT_ENDS = {
    "1.35": date(2027, 3, 27),
    "1.34": date(2026, 12, 2),
    "1.33": date(2026, 7, 29),
    "1.32": date(2026, 3, 23),
}
EKS_WARNING_DAYS = 60


@titled("EKS version")
def check_eks_version(stack_file: Path, config: StackConfig, aws: Account, today: date | None = None) -> Check:
    c = config.cluster
    if c is None:
        return Check.skip("EKS version", "no cluster section")
    version = c.version if c.create else aws.eks.describe_cluster(name=c.name)["cluster"]["version"]
    ends = EKS_STANDARD_SUPPORT_ENDS.get(version)
    today = today or date.today()
    newest = max(EKS_STANDARD_SUPPORT_ENDS, key=EKS_STANDARD_SUPPORT_ENDS.get)
    if ends is None or ends <= today:
        return Check.bad("EKS version", f"{version} is past standard support: upgrade to {newest} (cluster.version)")
    if (ends - today).days < EKS_WARNING_DAYS:
        return Check.bad("EKS version", f"{version}'s standard support ends {ends}: upgrade to {newest} first")
    return Check.ok("EKS version", f"{version}, standard support until {ends}")


@titled("database reach")
def check_database_reach(stack_file: Path, config: StackConfig, aws: Account) -> Check:
    """Every node of an existing cluster carries a security group PostgreSQL admits: the cluster's
    own, or one in database.clientSecurityGroupIds (else the migration Job times out)."""
    name = _existing_cluster(config)
    if name is None:
        return Check.skip("database reach", "a created cluster's managed nodes carry the cluster security group")
    cluster = aws.eks.describe_cluster(name=name)["cluster"]
    own = cluster.get("resourcesVpcConfig", {}).get("clusterSecurityGroupId")
    admitted = {g for g in (own, *config.database.client_security_group_ids) if g}
    pages = aws.ec2.get_paginator("describe_instances").paginate(
        Filters=[
            {"Name": f"tag:kubernetes.io/cluster/{name}", "Values": ["owned", "shared"]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )
    nodes = [i for page in pages for r in page["Reservations"] for i in r["Instances"]]
    if not nodes:
        return Check.skip("database reach", f"no running EC2 nodes tagged for {name} (Fargate only?)")
    cut_off = [i["InstanceId"] for i in nodes if not {g["GroupId"] for g in i["SecurityGroups"]} & admitted]
    if cut_off:
        return Check.bad(
            "database reach",
            f"{', '.join(cut_off)} carry none of {sorted(admitted)}: add their security group to "
            "database.clientSecurityGroupIds",
        )
    return Check.ok("database reach", f"all {len(nodes)} nodes carry an admitted security group")


@titled("IdP reach")
def check_idp_reach(stack_file: Path, config: StackConfig, aws: Account) -> Check:
    """With sso the ALB calls the IdP's token and user-info endpoints: its subnets need a default
    route out (an internet gateway, or a NAT for an internal ALB)."""
    if config.sso is None:
        return Check.skip("IdP reach", "no `sso` section")
    n = config.network
    if n.create_vpc:
        return Check.skip("IdP reach", "the created VPC's public subnets route to its internet gateway")
    subnets = n.private_subnet_ids if config.load_balancer.internal else n.public_subnet_ids
    no_route = [subnet for subnet in subnets if not _routes_out(aws, n.vpc_id, subnet)]
    if no_route:
        return Check.bad("IdP reach", f"{', '.join(no_route)} have no 0.0.0.0/0 route: the ALB cannot reach the IdP")
    return Check.ok("IdP reach", f"the ALB's subnets route out to {config.sso.token_endpoint or config.sso.issuer}")


def _routes_out(aws: Account, vpc_id: str, subnet: str) -> bool:
    """The subnet's route table (or the VPC's main one) has a default route to a gateway or NAT."""
    tables = aws.ec2.describe_route_tables(Filters=[{"Name": "association.subnet-id", "Values": [subnet]}])
    found = (
        tables["RouteTables"]
        or aws.ec2.describe_route_tables(
            Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "association.main", "Values": ["true"]}]
        )["RouteTables"]
    )
    return any(
        route.get("DestinationCidrBlock") == "0.0.0.0/0"
        and (route.get("GatewayId", "").startswith("igw-") or route.get("NatGatewayId"))
        for table in found
        for route in table.get("Routes", [])
    )


@titled("RDS major upgrade")
def check_major_upgrade(stack_file: Path, config: StackConfig, aws: Account) -> Check:
    """A new engine major applies at once only with database.applyImmediately: otherwise RDS waits
    for the maintenance window while the old parameter group, still attached, cannot be deleted."""
    identifier = f"mlflow-{config.environment}"
    try:
        live = aws.rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]["EngineVersion"]
    except aws.rds.exceptions.DBInstanceNotFoundFault:
        return Check.skip("RDS major upgrade", f"{identifier} does not exist yet")
    live_major, wanted = int(live.split(".")[0]), int(config.database.engine_version)
    if wanted < live_major:
        return Check.bad("RDS major upgrade", f"{identifier} runs {live}; RDS cannot go back to {wanted}")
    if wanted > live_major and not config.database.apply_immediately:
        return Check.bad(
            "RDS major upgrade",
            f"{identifier} runs {live}: upgrading to {wanted} needs database.applyImmediately: true for this up "
            "(and the writers' downtime, docs/deploying.md, day 2)",
        )
    return Check.ok(
        "RDS major upgrade", f"{identifier} runs {live}" + (f", upgrading to {wanted}" if wanted > live_major else "")
    )


CHECKS: tuple[Callable[[Path, StackConfig, Account], Check], ...] = (
    check_placeholders,
    check_deployable,
    check_account,
    check_engine_version,
    check_major_upgrade,
    check_github_oidc,
    check_certificate,
    check_network,
    check_bucket_names,
    check_secret_names,
    check_nat_quota,
    check_existing_cluster,
    check_access_entry,
    check_lb_controller,
    check_network_policy_enforcement,
    check_sso_discovery,
    check_eks_version,
    check_database_reach,
    check_idp_reach,
)


#: A check that cannot ask (no credentials, an API that does not answer) fails in one line.
UNREACHABLE = (
    botocore.exceptions.BotoCoreError,
    botocore.exceptions.ClientError,
    kubernetes.client.exceptions.ApiException,
    kubernetes.config.config_exception.ConfigException,
    urllib3.exceptions.HTTPError,
    OSError,
)


def run_checks(stack_file: Path, config: StackConfig, region: str) -> list[Check]:
    aws = Account(region)
    results = []
    for check in CHECKS:
        try:
            results.append(check(stack_file, config, aws))
        except UNREACHABLE as exc:
            results.append(Check.bad(check.title, f"could not check: {str(exc).splitlines()[0][:160]}"))
    return results
