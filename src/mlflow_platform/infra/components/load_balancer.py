"""The ALB: HTTPS only (HTTP redirects), modern TLS, an IP target group checked on /health."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from ...config import LoadBalancerConfig, SsoConfig
from ...sso import MACHINE_PATHS
from ._common import tags


class LoadBalancer(pulumi.ComponentResource):
    arn: pulumi.Output[str]
    arn_suffix: pulumi.Output[str]
    dns_name: pulumi.Output[str]
    security_group_id: pulumi.Output[str]
    target_group_arn: pulumi.Output[str]
    target_group_arn_suffix: pulumi.Output[str]
    url: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        config: LoadBalancerConfig,
        environment: str,
        *,
        vpc_id: pulumi.Input[str],
        vpc_cidr: pulumi.Input[str],
        subnet_ids: pulumi.Input[list[str]],
        target_port: int,
        log_bucket: pulumi.Input[str],
        deregistration_delay: int = 40,
        sso: SsoConfig | None = None,
        sso_client_secret: pulumi.Input[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("mlflow-platform:aws:LoadBalancer", name, None, opts)
        self._name, self._child = name, pulumi.ResourceOptions(parent=self)
        self._deregistration_delay = deregistration_delay
        self._sso, self._sso_client_secret = sso, sso_client_secret
        self._base = tags(environment, "load-balancer")
        assert config.hostname, "validated by StackConfig.deployment_problems"

        sg = self._security_group(config, vpc_id, vpc_cidr, target_port)

        alb, target_group = self._alb_and_target_group(
            config, environment, sg, vpc_id, subnet_ids, target_port, log_bucket
        )

        certificate_arn = self._certificate(config)

        self._listeners_and_dns(config, alb, target_group, certificate_arn)

        self.arn = alb.arn
        self.arn_suffix = alb.arn_suffix
        self.dns_name = alb.dns_name
        self.security_group_id = sg.id
        self.target_group_arn = target_group.arn
        self.target_group_arn_suffix = target_group.arn_suffix
        self.url = pulumi.Output.from_input(f"https://{config.hostname}")
        self.register_outputs({"dnsName": self.dns_name, "url": self.url, "targetGroupArn": self.target_group_arn})

    def _security_group(
        self, config: LoadBalancerConfig, vpc_id: pulumi.Input[str], vpc_cidr: pulumi.Input[str], target_port: int
    ) -> aws.ec2.SecurityGroup:
        sg = aws.ec2.SecurityGroup(
            f"{self._name}-sg",
            vpc_id=vpc_id,
            description="mlflow ALB: 443/80 from allowed CIDRs",
            tags=self._base,
            opts=self._child,
        )
        for port in (443, 80):
            for i, cidr in enumerate(config.allowed_cidrs):
                aws.vpc.SecurityGroupIngressRule(
                    f"{self._name}-in-{port}-{i}",
                    security_group_id=sg.id,
                    ip_protocol="tcp",
                    from_port=port,
                    to_port=port,
                    cidr_ipv4=cidr,
                    opts=self._child,
                )
        aws.vpc.SecurityGroupEgressRule(
            f"{self._name}-to-pods",
            security_group_id=sg.id,
            ip_protocol="tcp",
            from_port=target_port,
            to_port=target_port,
            cidr_ipv4=vpc_cidr,
            description="to mlflow pods (IP targets)",
            opts=self._child,
        )
        if self._sso is not None:
            # authenticate-oidc: the ALB itself calls the IdP's token and user-info endpoints.
            aws.vpc.SecurityGroupEgressRule(
                f"{self._name}-to-idp",
                security_group_id=sg.id,
                ip_protocol="tcp",
                from_port=443,
                to_port=443,
                cidr_ipv4="0.0.0.0/0",
                description="to the IdP's token and user-info endpoints (authenticate-oidc)",
                opts=self._child,
            )
        return sg

    def _alb_and_target_group(
        self,
        config: LoadBalancerConfig,
        environment: str,
        sg: aws.ec2.SecurityGroup,
        vpc_id: pulumi.Input[str],
        subnet_ids: pulumi.Input[list[str]],
        target_port: int,
        log_bucket: pulumi.Input[str],
    ) -> tuple[aws.lb.LoadBalancer, aws.lb.TargetGroup]:
        # Auto-named (the Name tag says which it is): a fixed name blocks the create-before-delete
        # replacement that a change such as `internal` forces ("a load balancer with that name exists").
        named = {**self._base, "Name": f"mlflow-{environment}"}
        alb = aws.lb.LoadBalancer(
            f"{self._name}-alb",
            load_balancer_type="application",
            internal=config.internal,
            subnets=subnet_ids,
            security_groups=[sg.id],
            idle_timeout=config.idle_timeout_seconds,
            drop_invalid_header_fields=True,
            enable_deletion_protection=config.deletion_protection,
            access_logs={"bucket": log_bucket, "prefix": "alb", "enabled": True},
            tags=named,
            opts=self._child,
        )
        target_group = aws.lb.TargetGroup(
            f"{self._name}-tg",
            port=target_port,
            protocol="HTTP",
            target_type="ip",
            vpc_id=vpc_id,
            deregistration_delay=self._deregistration_delay,
            health_check={
                "path": "/health",
                "matcher": "200",
                "interval": 15,
                "timeout": 5,
                "healthy_threshold": 2,
                "unhealthy_threshold": 3,
            },
            tags=named,
            opts=self._child,
        )
        return alb, target_group

    def _default_actions(self, target_group: aws.lb.TargetGroup) -> list[dict]:
        """Forward; with ``sso``, the IdP login first (everything not a client path is a browser path)."""
        forward = {"type": "forward", "target_group_arn": target_group.arn}
        sso = self._sso
        if sso is None:
            return [forward]
        login = {
            "type": "authenticate-oidc",
            "order": 1,
            "authenticate_oidc": {
                "issuer": sso.issuer,
                "authorization_endpoint": sso.authorization_endpoint,
                "token_endpoint": sso.token_endpoint,
                "user_info_endpoint": sso.user_info_endpoint,
                "client_id": sso.client_id,
                "client_secret": self._sso_client_secret,
                "scope": " ".join(sso.scopes),
                "session_timeout": sso.session_timeout_seconds,
                "on_unauthenticated_request": "authenticate",
            },
        }
        return [login, {**forward, "order": 2}]

    def _machine_paths(self, https: aws.lb.Listener, target_group: aws.lb.TargetGroup) -> None:
        """Client paths (the mlflow package, OTLP, gateway callers) skip the login: basic auth applies."""
        aws.lb.ListenerRule(
            f"{self._name}-machine-paths",
            listener_arn=https.arn,
            priority=2,
            conditions=[{"path_pattern": {"values": list(MACHINE_PATHS)}}],
            actions=[{"type": "forward", "target_group_arn": target_group.arn}],
            opts=self._child,
        )

    def _certificate(self, config: LoadBalancerConfig) -> pulumi.Input[str]:
        certificate_arn: pulumi.Input[str]
        if config.certificate_arn:
            certificate_arn = config.certificate_arn
        else:
            cert = aws.acm.Certificate(
                f"{self._name}-cert",
                domain_name=config.hostname,
                validation_method="DNS",
                tags=self._base,
                opts=self._child,
            )
            option = cert.domain_validation_options[0]
            record = aws.route53.Record(
                f"{self._name}-cert-validation",
                zone_id=config.route53_zone_id,
                name=option.resource_record_name,
                type=option.resource_record_type,
                records=[option.resource_record_value],
                ttl=300,
                allow_overwrite=True,
                opts=self._child,
            )
            certificate_arn = aws.acm.CertificateValidation(
                f"{self._name}-cert-validated",
                certificate_arn=cert.arn,
                validation_record_fqdns=[record.fqdn],
                opts=self._child,
            ).certificate_arn
        return certificate_arn

    def _listeners_and_dns(
        self,
        config: LoadBalancerConfig,
        alb: aws.lb.LoadBalancer,
        target_group: aws.lb.TargetGroup,
        certificate_arn: pulumi.Input[str],
    ) -> None:
        https = aws.lb.Listener(
            f"{self._name}-https",
            load_balancer_arn=alb.arn,
            port=443,
            protocol="HTTPS",
            ssl_policy=config.ssl_policy,
            certificate_arn=certificate_arn,
            default_actions=self._default_actions(target_group),
            opts=self._child,
        )
        if self._sso:
            self._machine_paths(https, target_group)
        # Prometheus metrics are scraped inside the cluster; through the ALB they answer 404.
        aws.lb.ListenerRule(
            f"{self._name}-no-metrics",
            listener_arn=https.arn,
            priority=1,
            conditions=[{"path_pattern": {"values": ["/metrics", "/metrics/*"]}}],
            actions=[
                {
                    "type": "fixed-response",
                    "fixed_response": {"content_type": "text/plain", "message_body": "Not Found", "status_code": "404"},
                }
            ],
            opts=self._child,
        )
        aws.lb.Listener(
            f"{self._name}-http",
            load_balancer_arn=alb.arn,
            port=80,
            protocol="HTTP",
            default_actions=[
                {"type": "redirect", "redirect": {"protocol": "HTTPS", "port": "443", "status_code": "HTTP_301"}}
            ],
            opts=self._child,
        )
        if config.route53_zone_id:
            aws.route53.Record(
                f"{self._name}-dns",
                zone_id=config.route53_zone_id,
                name=config.hostname,
                type="A",
                aliases=[{"name": alb.dns_name, "zone_id": alb.zone_id, "evaluate_target_health": True}],
                opts=self._child,
            )
