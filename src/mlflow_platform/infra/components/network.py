"""The VPC: created (public + private subnets across AZs, NAT) or an existing one from config."""

from __future__ import annotations

import ipaddress

import pulumi
import pulumi_aws as aws

from ...config import NetworkConfig
from ._common import output_policy, tags


class Network(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    vpc_cidr: pulumi.Output[str]
    public_subnet_ids: pulumi.Output[list[str]]
    private_subnet_ids: pulumi.Output[list[str]]
    public_subnet_cidrs: pulumi.Output[list[str]]
    private_subnet_cidrs: pulumi.Output[list[str]]

    def __init__(self, name: str, config: NetworkConfig, environment: str, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-platform:aws:Network", name, None, opts)
        self._name = name
        self.private_route_table_ids: list[pulumi.Output[str]] = []
        if not config.create_vpc:
            vpc = aws.ec2.get_vpc_output(id=config.vpc_id, opts=pulumi.InvokeOptions(parent=self))
            self.vpc_id = pulumi.Output.from_input(config.vpc_id)
            self.vpc_cidr = vpc.cidr_block
            self.public_subnet_ids = pulumi.Output.from_input(list(config.public_subnet_ids))
            self.private_subnet_ids = pulumi.Output.from_input(list(config.private_subnet_ids))
            self.public_subnet_cidrs = self._cidrs(config.public_subnet_ids)
            self.private_subnet_cidrs = self._cidrs(config.private_subnet_ids)
        else:
            self._create(name, config, environment)
        self.register_outputs(
            {
                "vpcId": self.vpc_id,
                "publicSubnetIds": self.public_subnet_ids,
                "privateSubnetIds": self.private_subnet_ids,
            }
        )

    def _cidrs(self, subnet_ids) -> pulumi.Output[list[str]]:
        invoke = pulumi.InvokeOptions(parent=self)
        return pulumi.Output.all(*[aws.ec2.get_subnet_output(id=sid, opts=invoke).cidr_block for sid in subnet_ids])

    def _create(self, name: str, config: NetworkConfig, environment: str) -> None:
        child = pulumi.ResourceOptions(parent=self)
        base = tags(environment, "network")
        zones = aws.get_availability_zones_output(state="available", opts=pulumi.InvokeOptions(parent=self))
        network = ipaddress.ip_network(config.cidr)
        blocks = list(network.subnets(new_prefix=network.prefixlen + 4))
        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=config.cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={**base, "Name": f"mlflow-{environment}"},
            opts=child,
        )
        igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags=base, opts=child)
        public_rt = aws.ec2.RouteTable(f"{name}-public", vpc_id=vpc.id, tags=base, opts=child)
        aws.ec2.Route(
            f"{name}-public-default",
            route_table_id=public_rt.id,
            destination_cidr_block="0.0.0.0/0",
            gateway_id=igw.id,
            opts=child,
        )
        public, private, nats = [], [], []
        for i in range(config.availability_zones):
            az = zones.names.apply(lambda names, i=i: names[i])
            pub, priv = self._zone(name, i, az, config, vpc, blocks, igw, public_rt, nats, base)
            public.append(pub)
            private.append(priv)
        self.vpc_id = vpc.id
        self.vpc_cidr = vpc.cidr_block
        self.public_subnet_ids = pulumi.Output.all(*[s.id for s in public])
        self.private_subnet_ids = pulumi.Output.all(*[s.id for s in private])
        self.public_subnet_cidrs = pulumi.Output.all(*[s.cidr_block for s in public])
        self.private_subnet_cidrs = pulumi.Output.all(*[s.cidr_block for s in private])

    def _zone(
        self,
        name: str,
        i: int,
        az: pulumi.Output[str],
        config: NetworkConfig,
        vpc: aws.ec2.Vpc,
        blocks: list,
        igw: aws.ec2.InternetGateway,
        public_rt: aws.ec2.RouteTable,
        nats: list,
        base: dict,
    ) -> tuple[aws.ec2.Subnet, aws.ec2.Subnet]:
        """One AZ: a public and a private subnet, NAT (per AZ, or the first one shared) and routes."""
        child = pulumi.ResourceOptions(parent=self)
        pub = aws.ec2.Subnet(
            f"{name}-public-{i}",
            vpc_id=vpc.id,
            cidr_block=str(blocks[i]),
            availability_zone=az,
            map_public_ip_on_launch=False,
            tags={**base, "kubernetes.io/role/elb": "1", "Tier": "public"},
            opts=child,
        )
        priv = aws.ec2.Subnet(
            f"{name}-private-{i}",
            vpc_id=vpc.id,
            cidr_block=str(blocks[config.availability_zones + i]),
            availability_zone=az,
            tags={**base, "kubernetes.io/role/internal-elb": "1", "Tier": "private"},
            opts=child,
        )
        aws.ec2.RouteTableAssociation(f"{name}-public-{i}", subnet_id=pub.id, route_table_id=public_rt.id, opts=child)
        if config.nat_gateway_per_az or i == 0:
            eip = aws.ec2.Eip(f"{name}-nat-{i}", domain="vpc", tags=base, opts=child)
            nats.append(
                aws.ec2.NatGateway(
                    f"{name}-nat-{i}",
                    subnet_id=pub.id,
                    allocation_id=eip.id,
                    tags=base,
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]),
                )
            )
        rt = aws.ec2.RouteTable(f"{name}-private-{i}", vpc_id=vpc.id, tags=base, opts=child)
        self.private_route_table_ids.append(rt.id)
        aws.ec2.Route(
            f"{name}-private-{i}-default",
            route_table_id=rt.id,
            destination_cidr_block="0.0.0.0/0",
            nat_gateway_id=nats[-1].id,
            opts=child,
        )
        aws.ec2.RouteTableAssociation(f"{name}-private-{i}", subnet_id=priv.id, route_table_id=rt.id, opts=child)
        return pub, priv

    def s3_gateway(self, region: pulumi.Input[str], bucket_arns: list[pulumi.Input[str]]) -> None:
        """Artifact traffic stays off the NAT gateways: a gateway endpoint on the private route
        tables, allowed to reach our buckets and the one ECR keeps image layers in (ECR docs,
        "Amazon S3 gateway endpoint": nodes pull layers from prod-<region>-starport-layer-bucket)."""
        if not self.private_route_table_ids:
            return  # an existing VPC: its owners decide its endpoints (docs/deploying.md)
        layers = pulumi.Output.concat("arn:aws:s3:::prod-", region, "-starport-layer-bucket/*")
        resources = [r for arn in bucket_arns for r in (arn, pulumi.Output.concat(arn, "/*"))]
        aws.ec2.VpcEndpoint(
            f"{self._name}-s3",
            vpc_id=self.vpc_id,
            service_name=pulumi.Output.concat("com.amazonaws.", region, ".s3"),
            vpc_endpoint_type="Gateway",
            route_table_ids=self.private_route_table_ids,
            policy=output_policy(
                {
                    "Sid": "PlatformBuckets",
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": resources,
                },
                {"Sid": "EcrLayers", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": layers},
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
