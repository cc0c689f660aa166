"""`mlflow-platform preflight`: every check against a local AWS API (moto's server), seeded once for
the pass case and once for the fail case. RDS's orderable-options catalogue is the exception: moto
ships none for PostgreSQL, so that check runs against botocore's Stubber with AWS's response shape."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import boto3
import pytest
import yaml
from botocore.stub import Stubber

from mlflow_platform import preflight
from mlflow_platform.config import load_stack_file
from mlflow_platform.infra.components.cluster import LB_CONTROLLER_CHART_VERSION

from .paths import ROOT

REGION = "eu-west-1"


@pytest.fixture
def aws(aws_api: str, monkeypatch: pytest.MonkeyPatch) -> preflight.Account:
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_api)
    return preflight.Account(REGION)


def stack(tmp_path: Path, base: str = "prod", **sections) -> tuple[Path, object]:
    document = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{base}.yaml").read_text())
    for key, value in sections.items():
        document["config"][f"mlflow-platform:{key}"] = {**document["config"].get(f"mlflow-platform:{key}", {}), **value}
    path = tmp_path / f"Pulumi.{base}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path, load_stack_file(path).config


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_placeholders_fail_until_replaced(tmp_path: Path, aws) -> None:
    marked = ROOT / "stacks" / "Pulumi.prod.yaml"
    config = load_stack_file(marked).config
    assert preflight.check_placeholders(marked, config, aws).status == "fail"
    path, config = stack(tmp_path)  # yaml.safe_dump drops the comments, and with them the markers
    assert preflight.check_placeholders(path, config, aws).status == "pass"


def test_engine_version_orderable_or_not(tmp_path: Path) -> None:
    path, config = stack(tmp_path, database={"engineVersion": "17", "instanceClass": "db.r6g.large"})
    account = preflight.Account(REGION)
    account._clients["rds"] = client = boto3.client(
        "rds", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stub:
        for versions in (["16.11", "17.7"], ["16.11"]):
            stub.add_response(
                "describe_orderable_db_instance_options",
                {
                    "OrderableDBInstanceOptions": [
                        {"Engine": "postgres", "EngineVersion": v, "DBInstanceClass": "db.r6g.large"} for v in versions
                    ]
                },
            )
        assert preflight.check_engine_version(path, config, account).status == "pass"
        failed = preflight.check_engine_version(path, config, account)
    assert failed.status == "fail" and "PostgreSQL 17 is not orderable" in failed.detail


def test_github_oidc_provider_created_once_per_account(tmp_path: Path, aws) -> None:
    creating, config_creating = stack(tmp_path, github={"createOidcProvider": True})
    assert preflight.check_github_oidc(creating, config_creating, aws).status == "pass"  # none yet: create
    (tmp_path / "other").mkdir()
    using, config_using = stack(tmp_path / "other", github={"createOidcProvider": False})
    assert preflight.check_github_oidc(using, config_using, aws).status == "fail"  # none, nobody creates
    aws.iam.create_open_id_connect_provider(
        Url="https://token.actions.githubusercontent.com", ClientIDList=["sts.amazonaws.com"], ThumbprintList=["a" * 40]
    )
    assert preflight.check_github_oidc(using, config_using, aws).status == "pass"
    duplicate = preflight.check_github_oidc(creating, config_creating, aws)
    assert duplicate.status == "fail" and "EntityAlreadyExists" in duplicate.detail


def _imported_certificate(aws: preflight.Account, hostname: str) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return aws.acm.import_certificate(
        Certificate=cert.public_bytes(serialization.Encoding.PEM),
        PrivateKey=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )["CertificateArn"]


def test_certificate_must_be_issued_for_the_hostname(tmp_path: Path, aws) -> None:
    host = f"{unique('mlflow')}.example.org"
    good = _imported_certificate(aws, host)
    path, config = stack(
        tmp_path, loadBalancer={"hostname": host, "certificateArn": good}, server={"allowedHosts": [host]}
    )
    assert preflight.check_certificate(path, config, aws).status == "pass"
    other = _imported_certificate(aws, f"{unique('other')}.example.org")
    path, config = stack(
        tmp_path, loadBalancer={"hostname": host, "certificateArn": other}, server={"allowedHosts": [host]}
    )
    wrong = preflight.check_certificate(path, config, aws)
    assert wrong.status == "fail" and f"not {host}" in wrong.detail


def test_route53_zone_must_be_authoritative_for_the_hostname(tmp_path: Path, aws) -> None:
    zone = aws.route53.create_hosted_zone(Name="platform.example.org", CallerReference=unique("z"))["HostedZone"]
    zone_id = zone["Id"].split("/")[-1]
    for host, status in (("mlflow.platform.example.org", "pass"), ("mlflow.elsewhere.example.net", "fail")):
        path, config = stack(
            tmp_path,
            loadBalancer={"hostname": host, "certificateArn": None, "route53ZoneId": zone_id},
            server={"allowedHosts": [host]},
        )
        assert preflight.check_certificate(path, config, aws).status == status, host


def _subnets(aws: preflight.Account, tagged: bool) -> tuple[str, list[str], list[str]]:
    vpc = aws.ec2.create_vpc(CidrBlock="10.80.0.0/16")["Vpc"]["VpcId"]
    ids = {"public": [], "private": []}
    for i, (tier, tag) in enumerate(
        [
            ("public", "kubernetes.io/role/elb"),
            ("public", "kubernetes.io/role/elb"),
            ("private", "kubernetes.io/role/internal-elb"),
            ("private", "kubernetes.io/role/internal-elb"),
        ]
    ):
        subnet = aws.ec2.create_subnet(
            VpcId=vpc, CidrBlock=f"10.80.{i}.0/24", AvailabilityZone=f"{REGION}{'ab'[i % 2]}"
        )["Subnet"]["SubnetId"]
        if tagged:
            aws.ec2.create_tags(Resources=[subnet], Tags=[{"Key": tag, "Value": "1"}])
        ids[tier].append(subnet)
    return vpc, ids["public"], ids["private"]


@pytest.mark.parametrize("tagged", [True, False])
def test_existing_subnets_span_two_zones_with_role_tags(tmp_path: Path, aws, tagged: bool) -> None:
    vpc, public, private = _subnets(aws, tagged)
    path, config = stack(tmp_path, network={"vpcId": vpc, "publicSubnetIds": public, "privateSubnetIds": private})
    result = preflight.check_network(path, config, aws)
    assert result.status == ("pass" if tagged else "fail")
    if not tagged:
        assert "lack the kubernetes.io/role/elb tag" in result.detail


def test_bucket_names_free_or_already_ours(tmp_path: Path, aws) -> None:
    path, config = stack(tmp_path, artifacts={"bucket": unique("mlflow-artifacts")})
    assert "(free)" in preflight.check_bucket_names(path, config, aws).detail
    aws.s3.create_bucket(Bucket=config.artifacts.bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    result = preflight.check_bucket_names(path, config, aws)
    assert result.status == "pass" and f"{config.artifacts.bucket} (yours)" in result.detail


def test_secret_names_in_their_recovery_window_fail(tmp_path: Path, aws) -> None:
    environment = unique("env")[:20].replace("-", "")
    path, config = stack(tmp_path, base="dev")
    config = config.model_copy(update={"environment": environment})
    assert preflight.check_secret_names(path, config, aws).status == "pass"
    aws.secretsmanager.create_secret(Name=f"mlflow/{environment}/database", SecretString="x")
    aws.secretsmanager.delete_secret(SecretId=f"mlflow/{environment}/database", RecoveryWindowInDays=7)
    waiting = preflight.check_secret_names(path, config, aws)
    assert waiting.status == "fail" and "recovery window" in waiting.detail


def test_elastic_ip_quota_covers_one_nat_per_zone(tmp_path: Path, aws) -> None:
    path, config = stack(tmp_path, base="dev", network={"availabilityZones": 3, "natGatewayPerAz": True})
    assert preflight.check_nat_quota(path, config, aws).status == "pass"  # moto's quota is 5
    for _ in range(3):
        aws.ec2.allocate_address(Domain="vpc")
    short = preflight.check_nat_quota(path, config, aws)
    assert short.status == "fail" and "3 needed, 2 of 5 left" in short.detail


def test_an_existing_cluster_needs_its_iam_oidc_provider(tmp_path: Path, aws) -> None:
    name = unique("platform")
    aws.eks.create_cluster(name=name, roleArn="arn:aws:iam::123456789012:role/eks", resourcesVpcConfig={})
    path, config = stack(tmp_path, cluster={"name": name})
    missing = preflight.check_existing_cluster(path, config, aws)
    assert missing.status == "fail" and "no IAM OIDC provider" in missing.detail
    issuer = aws.eks.describe_cluster(name=name)["cluster"]["identity"]["oidc"]["issuer"]
    aws.iam.create_open_id_connect_provider(Url=issuer, ClientIDList=["sts.amazonaws.com"], ThumbprintList=["b" * 40])
    assert preflight.check_existing_cluster(path, config, aws).status == "pass"


def test_the_command_prints_every_check_and_exits_1_on_a_failure(aws_api: str, monkeypatch) -> None:
    from typer.testing import CliRunner

    from mlflow_platform.cli import app

    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_api)
    result = CliRunner().invoke(app, ["preflight", "--stack", "prod"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    for name in ("example values", "GitHub OIDC provider", "TLS certificate", "VPC and subnets", "bucket names"):
        assert name in result.output
    assert "check(s) failed" in result.output


def test_every_ci_role_needs_its_access_entry_on_an_existing_cluster(tmp_path: Path, aws) -> None:
    """EKS has no access-entry data in moto: the EKS calls go through botocore's Stubber with the
    response shapes of AWS's API reference; the role lookups go to moto's IAM. Deploy must be an
    admin; drift (refresh reads Secrets) an AdminView; PR previews at least a View."""
    name = unique("platform")
    env = unique("env")[:12].replace("-", "")
    path, config = stack(tmp_path, cluster={"name": name}, github={"repository": "acme/mlflow-platform"})
    config = config.model_copy(update={"environment": env})
    roles = {p: f"arn:aws:iam::{aws.account_id}:role/mlflow-{env}-ci-{p}" for p in ("deploy", "drift", "preview")}
    aws._clients["eks"] = eks = boto3.client(
        "eks", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
    )
    cluster = {"cluster": {"name": name, "accessConfig": {"authenticationMode": "API_AND_CONFIG_MAP"}}}

    def policy(name_: str) -> dict:
        return {"policyArn": f"arn:aws:eks::aws:cluster-access-policy/{name_}"}

    granted = {
        "deploy": [policy("AmazonEKSClusterAdminPolicy")],
        "drift": [policy("AmazonEKSAdminViewPolicy")],
        "preview": [policy("AmazonEKSViewPolicy")],
    }
    with Stubber(eks) as stub:
        stub.add_response("describe_cluster", cluster)
        before = preflight.check_access_entry(path, config, aws)
        assert before.status == "skip" and "first `pulumi up` creates them" in before.detail  # before the first up
        for purpose in roles:
            aws.iam.create_role(RoleName=roles[purpose].rsplit("/", 1)[1], AssumeRolePolicyDocument="{}")
        try:
            _each_preview_grant(stub, path, config, aws, name, cluster, roles, granted)
        finally:  # moto's IAM is shared by the session: another environment's roles would fail check_account
            for role in roles.values():
                aws.iam.delete_role(RoleName=role.rsplit("/", 1)[1])
        stub.add_response(
            "describe_cluster", {"cluster": {"name": name, "accessConfig": {"authenticationMode": "CONFIG_MAP"}}}
        )
        assert "authenticationMode=API_AND_CONFIG_MAP" in preflight.check_access_entry(path, config, aws).detail


def _each_preview_grant(stub, path, config, aws, name, cluster, roles, granted) -> None:
    for preview_policies in ([], granted["preview"]):
        stub.add_response("describe_cluster", cluster)
        stub.add_response("list_access_entries", {"accessEntries": list(roles.values())})
        for purpose, role in roles.items():
            given = preview_policies if purpose == "preview" else granted[purpose]
            stub.add_response(
                "list_associated_access_policies",
                {"clusterName": name, "principalArn": role, "associatedAccessPolicies": given},
            )
        result = preflight.check_access_entry(path, config, aws)
        assert result.status == ("pass" if preview_policies else "fail"), result
        if not preview_policies:
            assert "ci-preview has no AmazonEKSViewPolicy" in result.detail
            assert "associate-access-policy" in result.detail and "ci-deploy has no" not in result.detail


def _deployment(available: int) -> dict:
    labels = {"app.kubernetes.io/name": "aws-load-balancer-controller"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "aws-load-balancer-controller", "namespace": "kube-system"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {"name": "controller", "image": "public.ecr.aws/eks/aws-load-balancer-controller:v3.5.0"}
                    ]
                },
            },
        },
        "status": {"availableReplicas": available} if available else {},
    }


def _daemon_set(name: str, args: list[str]) -> dict:
    labels = {"k8s-app": name}
    containers = [{"name": "aws-node", "image": "cni"}, {"name": "aws-eks-nodeagent", "image": "agent", "args": args}]
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": "kube-system"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": containers}},
        },
    }


@pytest.fixture
def cluster_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A stand-in for the cluster's API server (nothing here runs Kubernetes): it answers the two
    reads the checks make with the objects a test puts in ``objects``, and 404 otherwise."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    objects: dict[str, dict] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            found = objects.get(self.path.split("?")[0])
            body = json.dumps(found or {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404})
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
        "contexts": [{"name": "platform", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "current-context": "platform",
    }
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    yield objects
    server.shutdown()


APPS = "/apis/apps/v1/namespaces/kube-system"


def test_an_existing_cluster_needs_the_lb_controller_running(tmp_path: Path, aws, cluster_api) -> None:
    path, config = stack(tmp_path, cluster={"name": "platform", "kubeconfigContext": "platform"})
    missing = preflight.check_lb_controller(path, config, aws)
    assert missing.status == "fail" and f"chart {LB_CONTROLLER_CHART_VERSION}" in missing.detail
    cluster_api[f"{APPS}/deployments/aws-load-balancer-controller"] = _deployment(available=0)
    assert "no available replica" in preflight.check_lb_controller(path, config, aws).detail
    cluster_api[f"{APPS}/deployments/aws-load-balancer-controller"] = _deployment(available=2)
    assert preflight.check_lb_controller(path, config, aws) == preflight.Check.ok(
        "LB controller", "2 available (aws-load-balancer-controller:v3.5.0)"
    )


def test_an_existing_cluster_must_enforce_network_policies(tmp_path: Path, aws, cluster_api) -> None:
    path, config = stack(tmp_path, cluster={"name": "platform", "kubeconfigContext": "platform"})
    cluster_api[f"{APPS}/daemonsets/aws-node"] = _daemon_set("aws-node", ["--enable-network-policy=false"])
    off = preflight.check_network_policy_enforcement(path, config, aws)
    assert off.status == "fail" and "enableNetworkPolicy" in off.detail
    cluster_api[f"{APPS}/daemonsets/aws-node"] = _daemon_set("aws-node", ["--enable-network-policy=true"])
    assert preflight.check_network_policy_enforcement(path, config, aws).status == "pass"
    del cluster_api[f"{APPS}/daemonsets/aws-node"]
    cluster_api[f"{APPS}/daemonsets/cilium"] = _daemon_set("cilium", [])
    assert "cilium" in preflight.check_network_policy_enforcement(path, config, aws).detail


def test_an_unreachable_cluster_api_is_a_failed_check_not_a_traceback(tmp_path: Path, aws, monkeypatch) -> None:
    path, config = stack(tmp_path, cluster={"name": "platform", "kubeconfigContext": "nowhere"})
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    results = {c.name: c for c in preflight.run_checks(path, config, REGION)}
    for name in ("LB controller", "NetworkPolicy enforcement"):
        assert results[name].status == "fail" and results[name].detail.startswith("could not check:")


@pytest.fixture
def https_idp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An HTTPS issuer on loopback (a self-signed certificate the client is told to trust) serving a
    discovery document the test can change."""
    import datetime
    import http.server
    import ipaddress
    import json as jsonlib
    import ssl
    import threading

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    document: dict = {}

    class Discovery(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            found = self.path == "/oauth2/default/.well-known/openid-configuration"
            body = jsonlib.dumps(document).encode()
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body if found else b"{}")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Discovery)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "cert.pem"))
    issuer = f"https://127.0.0.1:{server.server_address[1]}/oauth2/default"
    document.update(
        issuer=issuer,
        authorization_endpoint=f"{issuer}/v1/authorize",
        token_endpoint=f"{issuer}/v1/token",
        userinfo_endpoint=f"{issuer}/v1/userinfo",
        scopes_supported=["openid", "email", "profile", "groups"],
    )
    yield issuer, document
    server.shutdown()


def test_sso_discovery_must_answer_and_match_the_configured_endpoints_and_scopes(
    tmp_path: Path, https_idp, aws
) -> None:
    issuer, document = https_idp
    sso = {
        "issuer": issuer,
        "authorizationEndpoint": f"{issuer}/v1/authorize",
        "tokenEndpoint": f"{issuer}/v1/token",
        "userInfoEndpoint": f"{issuer}/v1/userinfo",
        "clientId": "client",
        "scopes": ["openid", "email", "groups"],
    }
    path, config = stack(tmp_path, "staging", sso=sso)
    assert preflight.check_sso_discovery(path, config, aws).status == "pass"
    document["scopes_supported"] = ["openid", "email"]
    missing = preflight.check_sso_discovery(path, config, aws)
    assert missing.status == "fail" and "groups" in missing.detail
    document["token_endpoint"] = f"{issuer}/v2/token"
    moved = preflight.check_sso_discovery(path, config, aws)
    assert moved.status == "fail" and "token_endpoint" in moved.detail
    path, config = stack(tmp_path, "staging", sso={**sso, "issuer": issuer + "-typo"})
    assert preflight.check_sso_discovery(path, config, aws).status == "fail"  # 404
    path, config = stack(tmp_path, "dev")
    assert preflight.check_sso_discovery(path, config, aws).status == "skip"


def _stack_in_account(tmp_path: Path, account: str, base: str = "prod", **sections) -> tuple[Path, object]:
    path, _ = stack(tmp_path, base, **sections)
    document = yaml.safe_load(path.read_text())
    document["config"]["aws:allowedAccountIds"] = [account]
    path.write_text(yaml.safe_dump(document))
    return path, load_stack_file(path).config


def test_the_account_must_be_the_stacks_own_and_hold_no_other_environment(tmp_path: Path, aws) -> None:
    """Decision 0008: a deploy role reaches everything in its account, so environments never share one."""
    account = aws.account_id
    path, config = _stack_in_account(tmp_path, account)
    assert preflight.check_account(path, config, aws).status == "pass"
    (tmp_path / "elsewhere").mkdir()
    elsewhere, config_elsewhere = _stack_in_account(tmp_path / "elsewhere", "999999999999")
    wrong = preflight.check_account(elsewhere, config_elsewhere, aws)
    assert wrong.status == "fail" and f"credentials are for {account}" in wrong.detail
    aws.iam.create_role(RoleName="mlflow-dev-ci-deploy", AssumeRolePolicyDocument="{}")
    try:
        shared = preflight.check_account(path, config, aws)
        assert shared.status == "fail" and "mlflow-dev-ci-deploy" in shared.detail
    finally:
        aws.iam.delete_role(RoleName="mlflow-dev-ci-deploy")


def test_a_stack_missing_a_secret_or_sharing_an_account_is_not_deployable(tmp_path: Path, aws) -> None:
    staging = ROOT / "stacks" / "Pulumi.staging.yaml"  # sso, and the example cannot carry the secret
    missing = preflight.check_deployable(staging, load_stack_file(staging).config, aws)
    assert missing.status == "fail" and "ssoClientSecret" in missing.detail
    document = yaml.safe_load(staging.read_text())
    document["config"]["mlflow-platform:ssoClientSecret"] = {"secure": "v1:ciphertext"}
    (tmp_path / "Pulumi.staging.yaml").write_text(yaml.safe_dump(document))
    ready = preflight.check_deployable(tmp_path / "Pulumi.staging.yaml", load_stack_file(staging).config, aws)
    assert ready.status == "pass", ready.detail
    prod = yaml.safe_load((ROOT / "stacks" / "Pulumi.prod.yaml").read_text())
    prod["config"]["aws:allowedAccountIds"] = document["config"]["aws:allowedAccountIds"]
    (tmp_path / "Pulumi.prod.yaml").write_text(yaml.safe_dump(prod))
    shared = preflight.check_deployable(tmp_path / "Pulumi.staging.yaml", load_stack_file(staging).config, aws)
    assert shared.status == "fail" and "also prod's account" in shared.detail


@pytest.mark.parametrize(
    ("version", "today", "status"),
    [
        ("1.35", dt.date(2026, 12, 7), "pass"),
        ("1.35", dt.date(2027, 2, 1), "fail"),
        ("1.34", dt.date(2026, 12, 7), "fail"),
        ("1.29", dt.date(2026, 12, 7), "fail"),
    ],
)
def test_the_cluster_version_is_in_standard_support_with_time_to_spare(
    tmp_path: Path, aws, version, today, status
) -> None:
    path, config = stack(tmp_path, "dev", cluster={"version": version})
    assert preflight.check_eks_version(path, config, aws, today=today).status == status


def test_every_node_of_an_existing_cluster_must_carry_a_group_the_database_admits(tmp_path: Path, aws) -> None:
    name = unique("platform")
    vpc = aws.ec2.create_vpc(CidrBlock="10.60.0.0/16")["Vpc"]["VpcId"]
    subnet = aws.ec2.create_subnet(VpcId=vpc, CidrBlock="10.60.1.0/24")["Subnet"]["SubnetId"]
    karpenter_sg = aws.ec2.create_security_group(GroupName=unique("karpenter"), Description="nodes", VpcId=vpc)[
        "GroupId"
    ]
    aws.eks.create_cluster(
        name=name, roleArn="arn:aws:iam::123456789012:role/eks", resourcesVpcConfig={"subnetIds": [subnet]}
    )
    image = aws.ec2.describe_images()["Images"][0]["ImageId"]
    node_tags = [{"Key": f"kubernetes.io/cluster/{name}", "Value": "owned"}]
    aws.ec2.run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        SubnetId=subnet,
        SecurityGroupIds=[karpenter_sg],  # a Karpenter node: not the cluster security group
        TagSpecifications=[{"ResourceType": "instance", "Tags": node_tags}],
    )
    path, config = stack(tmp_path, cluster={"name": name})
    cut_off = preflight.check_database_reach(path, config, aws)
    assert cut_off.status == "fail" and "database.clientSecurityGroupIds" in cut_off.detail
    path, config = stack(tmp_path, cluster={"name": name}, database={"clientSecurityGroupIds": [karpenter_sg]})
    assert preflight.check_database_reach(path, config, aws).status == "pass"


def test_with_sso_the_albs_subnets_must_route_out_to_the_idp(tmp_path: Path, aws) -> None:
    vpc = aws.ec2.create_vpc(CidrBlock="10.61.0.0/16")["Vpc"]["VpcId"]
    subnets = [aws.ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.61.{i}.0/24")["Subnet"]["SubnetId"] for i in (1, 2)]
    table = aws.ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    for subnet in subnets:
        aws.ec2.associate_route_table(RouteTableId=table, SubnetId=subnet)
    network = {"vpcId": vpc, "publicSubnetIds": subnets, "privateSubnetIds": subnets}
    path, config = stack(tmp_path, "staging", network=network)  # the stack with sso
    closed = preflight.check_idp_reach(path, config, aws)
    assert closed.status == "fail" and subnets[0] in closed.detail
    gateway = aws.ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    aws.ec2.attach_internet_gateway(InternetGatewayId=gateway, VpcId=vpc)
    aws.ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", GatewayId=gateway)
    assert preflight.check_idp_reach(path, config, aws).status == "pass"
    path, config = stack(tmp_path, "prod", network=network)
    assert preflight.check_idp_reach(path, config, aws).status == "skip"  # no sso


def test_a_major_engine_bump_needs_apply_immediately(tmp_path: Path, aws) -> None:
    env = unique("maj")[:12].replace("-", "")
    path, _ = stack(tmp_path, database={"engineVersion": "17"})
    config = load_stack_file(path).config.model_copy(update={"environment": env})
    assert preflight.check_major_upgrade(path, config, aws).status == "skip"  # no instance yet
    aws.rds.create_db_instance(
        DBInstanceIdentifier=f"mlflow-{env}", DBInstanceClass="db.t4g.small", Engine="postgres",
        EngineVersion="16.4", MasterUsername="x", MasterUserPassword="x" * 12, AllocatedStorage=20,
    )  # fmt: skip
    try:
        waiting = preflight.check_major_upgrade(path, config, aws)
        assert waiting.status == "fail" and "database.applyImmediately: true" in waiting.detail
        ready = config.model_copy(update={"database": config.database.model_copy(update={"apply_immediately": True})})
        assert preflight.check_major_upgrade(path, ready, aws).status == "pass"
        back = config.model_copy(update={"database": config.database.model_copy(update={"engine_version": "15"})})
        assert "cannot go back" in preflight.check_major_upgrade(path, back, aws).detail
    finally:
        aws.rds.delete_db_instance(DBInstanceIdentifier=f"mlflow-{env}", SkipFinalSnapshot=True)
