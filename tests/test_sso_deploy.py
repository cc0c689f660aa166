"""A stack with `sso` under mocks: the ALB logs people in on browser paths and passes client paths
through; the server's ini names the SSO authorization function and its settings pin this ALB."""

from __future__ import annotations

import configparser

import pytest
import yaml

from mlflow_platform.config import ConfigError, load_stack_file
from mlflow_platform.server_spec import BASIC_AUTHORIZATION, SSO_AUTHORIZATION
from mlflow_platform.sso import MACHINE_PATHS, SsoSettings

from .paths import ROOT, STACKS, captured

SSO_STACK = "staging"


def _https_listener(capture):
    return next(r for r in capture.of_type("aws:lb/listener:Listener") if r.inputs.get("protocol") == "HTTPS")


def _server_files(capture) -> dict[str, str]:
    return capture.one("kubernetes:core/v1:ConfigMap", "tracking-auth").inputs["data"]


def _authorization_function(capture) -> str:
    parser = configparser.ConfigParser()
    parser.read_string(_server_files(capture)["basic_auth.ini"])
    return parser["mlflow"]["authorization_function"]


def test_the_sso_stack_logs_people_in_before_forwarding() -> None:
    capture = captured(SSO_STACK)
    config = load_stack_file(ROOT / "stacks" / f"Pulumi.{SSO_STACK}.yaml").config
    login, forward = _https_listener(capture).inputs["defaultActions"]
    assert (login["type"], login["order"], forward["type"], forward["order"]) == ("authenticate-oidc", 1, "forward", 2)
    oidc = login["authenticateOidc"]
    assert oidc["issuer"] == config.sso.issuer and oidc["clientId"] == config.sso.client_id
    assert oidc["tokenEndpoint"] == config.sso.token_endpoint and oidc["scope"] == "openid email profile groups"
    assert oidc["onUnauthenticatedRequest"] == "authenticate" and oidc["sessionTimeout"] == 28800
    # The client secret is a Pulumi secret: the plan's text masks the actions that carry it.
    assert _https_listener(capture).display["defaultActions"] == "[secret]"
    assert oidc["clientSecret"] == "placeholder-secret-value"


def test_client_paths_skip_the_login_after_the_metrics_block() -> None:
    capture = captured(SSO_STACK)
    rules = {r.name: r.inputs for r in capture.of_type("aws:lb/listenerRule:ListenerRule")}
    machine = rules["lb-machine-paths"]
    assert machine["conditions"] == [{"pathPattern": {"values": list(MACHINE_PATHS)}}]
    assert [a["type"] for a in machine["actions"]] == ["forward"]
    assert rules["lb-no-metrics"]["priority"] < machine["priority"]  # /metrics stays 404 at the ALB


def test_the_server_verifies_headers_signed_by_this_alb_from_its_subnets_only() -> None:
    capture = captured(SSO_STACK)
    assert _authorization_function(capture) == SSO_AUTHORIZATION
    settings = SsoSettings.from_json(_server_files(capture)["sso.json"])
    alb = capture.one("aws:lb/loadBalancer:LoadBalancer")
    assert settings.signer == alb.outputs["arn"]
    assert settings.key_endpoint == "https://public-keys.auth.elb.eu-west-1.amazonaws.com"  # the stack's region
    policy = capture.one("kubernetes:networking.k8s.io/v1:NetworkPolicy", "tracking-netpol")
    peers = [p["ipBlock"]["cidr"] for rule in policy.inputs["spec"]["ingress"] for p in rule["from"] if "ipBlock" in p]
    assert settings.trusted_proxies and set(settings.trusted_proxies) <= set(peers)  # the ALB's subnets
    env = {e["name"]: e.get("value") for e in _deployment_env(capture)}
    assert env["MLFLOW_PLATFORM_SSO_CONFIG"] == "/etc/mlflow/auth/sso.json"


def _deployment_env(capture) -> list[dict]:
    deployment = capture.one("kubernetes:apps/v1:Deployment", "tracking-deployment")
    return deployment.inputs["spec"]["template"]["spec"]["containers"][0]["env"]


@pytest.mark.parametrize("stack", [s for s in STACKS if s != SSO_STACK])
def test_stacks_without_sso_forward_and_use_basic_auth(stack: str) -> None:
    capture = captured(stack)
    assert [a["type"] for a in _https_listener(capture).inputs["defaultActions"]] == ["forward"]
    assert _authorization_function(capture) == BASIC_AUTHORIZATION
    assert "sso.json" not in _server_files(capture)


def test_sso_config_mistakes_name_the_key_and_the_fix(tmp_path) -> None:
    document = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{SSO_STACK}.yaml").read_text())
    sso = document["config"]["mlflow-platform:sso"]
    cases = {
        "sso.scopes": {**sso, "scopes": ["email"]},
        "sso.teamGroups[0].team": {**sso, "teamGroups": [{"group": "g", "team": "nobody"}]},
        "sso.usernameClaim": {**sso, "usernameClaim": "nickname"},
    }
    for key, broken in cases.items():
        document["config"]["mlflow-platform:sso"] = broken
        path = tmp_path / "Pulumi.staging.yaml"
        path.write_text(yaml.safe_dump(document))
        with pytest.raises(ConfigError) as raised:
            load_stack_file(path)
        assert key in str(raised.value), (key, str(raised.value))
    document["config"]["mlflow-platform:sso"] = {k: v for k, v in sso.items() if k != "tokenEndpoint"}
    path.write_text(yaml.safe_dump(document))
    problems = dict(load_stack_file(path).config.deployment_problems())
    assert "sso.tokenEndpoint" in problems and "ssoClientSecret" in problems
    assert "pulumi config set --secret mlflow-platform:ssoClientSecret" in problems["ssoClientSecret"]


def test_with_teams_the_sso_stack_maps_groups_to_roles_and_the_teams_job_keeps_sso_users() -> None:
    from .test_infra_program import run_with

    teams = [{"name": "search", "members": ["ci-search"]}, {"name": "ranking", "readers": ["search"]}]
    document = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{SSO_STACK}.yaml").read_text())
    sso = {**document["config"]["mlflow-platform:sso"], "teamGroups": [{"group": "okta-search", "team": "search"}]}
    capture = run_with(SSO_STACK, teams=teams, sso=sso)
    command = capture.one("kubernetes:batch/v1:Job", "teams-job").inputs["spec"]["template"]["spec"]["containers"][0]
    assert "--keep-undeclared-users" in command["command"]  # people's roles follow their groups
    roles = {
        (r.group, r.workspace, r.role) for r in SsoSettings.from_json(_server_files(capture)["sso.json"]).team_roles
    }
    assert roles == {("okta-search", "search", "team-member"), ("okta-search", "ranking", "team-reader")}
    plain = run_with("prod", teams=teams).one("kubernetes:batch/v1:Job", "teams-job")
    assert "--keep-undeclared-users" not in plain.inputs["spec"]["template"]["spec"]["containers"][0]["command"]


def _alb_egress(stack: str) -> list[dict]:
    return [
        r.inputs
        for r in captured(stack).of_type("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")
        if r.name.startswith("lb-")
    ]


def test_with_sso_the_alb_may_reach_the_identity_provider() -> None:
    """authenticate-oidc: the ALB itself calls the IdP's token and user-info endpoints over HTTPS
    (AWS CDK's AuthenticateOidcOptions.allow_https_outbound, on by default, exists for this), so its
    security group needs that egress, or every sign-in ends in HTTP 500."""
    to_idp = [e for e in _alb_egress(SSO_STACK) if e["fromPort"] == 443 and e["toPort"] == 443]
    assert [e["cidrIpv4"] for e in to_idp] == ["0.0.0.0/0"]
    for plain in (s for s in STACKS if s != SSO_STACK):  # no login, no egress beyond the pods
        assert not [e for e in _alb_egress(plain) if e["fromPort"] == 443], plain
