"""The EKS cluster: an existing one (by name, or a kubeconfig context), or a created one with a
managed node group, its OIDC provider for IRSA, and the AWS Load Balancer Controller that the
server's TargetGroupBinding needs."""

from __future__ import annotations

import json
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from ...config import ClusterConfig
from ...eks import kubeconfig as eks_kubeconfig
from ._common import policy_json, tags
from .iam import irsa_trust

#: The eks-charts release; its controller's IAM policy is vendored unchanged next to the program
#: (infra/vendor/, with its source and checksum) and must be updated with it.
LB_CONTROLLER_CHART_VERSION = "3.5.0"
LB_CONTROLLER_POLICY = Path(__file__).parents[1] / "vendor" / "aws-load-balancer-controller-iam-policy.json"


def kubeconfig(name: pulumi.Input[str], endpoint: pulumi.Input[str], ca_data: pulumi.Input[str]) -> pulumi.Output[str]:
    """A kubeconfig that authenticates with `aws eks get-token` (no static credentials)."""
    return pulumi.Output.all(name, endpoint, ca_data).apply(lambda a: json.dumps(eks_kubeconfig(*a)))


def endpoint_access(config: ClusterConfig, subnet_ids) -> dict:
    """The API endpoint is always reachable inside the VPC; from outside only from the listed CIDRs
    (EKS defaults publicAccessCidrs to 0.0.0.0/0), and not at all when the list is empty."""
    cidrs = list(config.public_access_cidrs or ())
    access = {"subnet_ids": subnet_ids, "endpoint_private_access": True, "endpoint_public_access": bool(cidrs)}
    return {**access, "public_access_cidrs": cidrs} if cidrs else access


#: What each CI role may do in a created cluster (EKS access policies,
#: https://docs.aws.amazon.com/eks/latest/userguide/access-policy-permissions.html): deploy
#: changes everything; drift's refresh reads Secrets too (AdminView); PR previews read the rest (View).
CI_CLUSTER_ACCESS = {
    "deploy": "AmazonEKSClusterAdminPolicy",
    "drift": "AmazonEKSAdminViewPolicy",
    "preview": "AmazonEKSViewPolicy",
}


class ClusterAccess(pulumi.ComponentResource):
    """EKS access entries for the CI roles of a cluster this stack created (authentication mode API:
    only the creator is admin until an entry says otherwise)."""

    def __init__(
        self,
        name: str,
        cluster_name: pulumi.Input[str],
        roles: dict[str, aws.iam.Role],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("mlflow-platform:aws:ClusterAccess", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        for purpose, policy in CI_CLUSTER_ACCESS.items():
            entry = aws.eks.AccessEntry(
                f"{name}-{purpose}", cluster_name=cluster_name, principal_arn=roles[purpose].arn, opts=child
            )
            aws.eks.AccessPolicyAssociation(
                f"{name}-{purpose}-policy",
                cluster_name=cluster_name,
                principal_arn=entry.principal_arn,
                policy_arn=f"arn:aws:eks::aws:cluster-access-policy/{policy}",
                access_scope={"type": "cluster"},
                opts=child,
            )
        self.register_outputs({})


class Cluster(pulumi.ComponentResource):
    name_out: pulumi.Output[str]
    oidc_provider_arn: pulumi.Output[str]
    oidc_issuer: pulumi.Output[str]
    security_group_id: pulumi.Output[str]
    provider: k8s.Provider
    lb_controller: pulumi.Resource | None

    def __init__(
        self,
        name: str,
        config: ClusterConfig,
        environment: str,
        *,
        account_id: pulumi.Input[str],
        region: pulumi.Input[str],
        vpc_id: pulumi.Input[str],
        subnet_ids: pulumi.Input[list[str]],
        boundary_arn: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("mlflow-platform:aws:Cluster", name, None, opts)
        self.lb_controller = None
        self._boundary = boundary_arn  # on every role created here: the deploy role may only create bounded roles
        if config.create:
            self._create(name, config, environment, vpc_id=vpc_id, subnet_ids=subnet_ids, region=region)
        else:
            existing = aws.eks.get_cluster_output(name=config.name, opts=pulumi.InvokeOptions(parent=self))
            self.name_out = existing.name
            self.oidc_issuer = existing.identities[0].oidcs[0].issuer
            self.oidc_provider_arn = pulumi.Output.concat(
                "arn:aws:iam::",
                account_id,
                ":oidc-provider/",
                self.oidc_issuer.apply(lambda url: url.removeprefix("https://")),
            )
            self.security_group_id = existing.vpc_config.cluster_security_group_id
            provider_args = (
                {"context": config.kubeconfig_context}
                if config.kubeconfig_context
                else {
                    "kubeconfig": kubeconfig(existing.name, existing.endpoint, existing.certificate_authorities[0].data)
                }
            )
            self.provider = k8s.Provider(f"{name}-k8s", **provider_args, opts=pulumi.ResourceOptions(parent=self))
        self.register_outputs(
            {
                "name": self.name_out,
                "oidcProviderArn": self.oidc_provider_arn,
                "securityGroupId": self.security_group_id,
            }
        )

    def _control_plane(
        self, name: str, config: ClusterConfig, environment: str, subnet_ids, base: dict, child: pulumi.ResourceOptions
    ) -> aws.eks.Cluster:
        role = aws.iam.Role(
            f"{name}-role",
            name=f"mlflow-{environment}-eks",
            permissions_boundary=self._boundary,
            assume_role_policy=policy_json(
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "eks.amazonaws.com"},
                    "Action": ["sts:AssumeRole", "sts:TagSession"],
                }
            ),
            tags=base,
            opts=child,
        )
        aws.iam.RolePolicyAttachment(
            f"{name}-role-policy",
            role=role.name,
            policy_arn="arn:aws:iam::aws:policy/AmazonEKSClusterPolicy",
            opts=child,
        )
        cluster = aws.eks.Cluster(
            f"{name}-eks",
            name=f"mlflow-{environment}",
            role_arn=role.arn,
            version=config.version,
            vpc_config=endpoint_access(config, subnet_ids),
            access_config={"authentication_mode": "API", "bootstrap_cluster_creator_admin_permissions": True},
            # STANDARD: never billed for extended support; EKS upgrades the cluster itself at the end of
            # standard support (https://docs.aws.amazon.com/eks/latest/userguide/kubernetes-versions.html).
            upgrade_policy={"support_type": "STANDARD"},
            enabled_cluster_log_types=["api", "audit", "authenticator"],
            tags=base,
            opts=child,
        )
        return cluster

    def _node_group(
        self,
        name: str,
        config: ClusterConfig,
        environment: str,
        cluster: aws.eks.Cluster,
        subnet_ids,
        base: dict,
        child: pulumi.ResourceOptions,
    ) -> aws.eks.NodeGroup:
        node_role = aws.iam.Role(
            f"{name}-nodes",
            name=f"mlflow-{environment}-eks-nodes",
            permissions_boundary=self._boundary,
            assume_role_policy=policy_json(
                {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
            ),
            tags=base,
            opts=child,
        )
        for i, policy in enumerate(
            ("AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly")
        ):
            aws.iam.RolePolicyAttachment(
                f"{name}-nodes-{i}", role=node_role.name, policy_arn=f"arn:aws:iam::aws:policy/{policy}", opts=child
            )
        nodes = aws.eks.NodeGroup(
            f"{name}-nodegroup",
            cluster_name=cluster.name,
            node_role_arn=node_role.arn,
            subnet_ids=subnet_ids,
            instance_types=list(config.node_instance_types),
            scaling_config={
                "min_size": config.node_min_size,
                "desired_size": config.node_desired_size,
                "max_size": config.node_max_size,
            },
            # Follows the control plane: after an EKS minor bump the nodes roll one at a time onto it
            # (unset, a managed node group keeps the version it was created with).
            version=cluster.version,
            update_config={"max_unavailable": 1},
            tags=base,
            opts=child,
        )
        # VPC CNI enforces NetworkPolicies only when its network-policy agent is on (off by default:
        # EKS docs, "Limit pod traffic with Kubernetes network policies").
        aws.eks.Addon(
            f"{name}-vpc-cni",
            cluster_name=cluster.name,
            addon_name="vpc-cni",
            configuration_values=json.dumps({"enableNetworkPolicy": "true"}),
            # A new cluster already runs the self-managed vpc-cni: take it over on create too.
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            opts=child,
        )
        return nodes

    def _lb_controller(
        self,
        name: str,
        environment: str,
        cluster: aws.eks.Cluster,
        oidc: aws.iam.OpenIdConnectProvider,
        nodes: aws.eks.NodeGroup,
        region,
        vpc_id,
        base: dict,
        child: pulumi.ResourceOptions,
    ) -> k8s.helm.v3.Release:
        controller_role = aws.iam.Role(
            f"{name}-lbc-role",
            name=f"mlflow-{environment}-lb-controller",
            permissions_boundary=self._boundary,
            assume_role_policy=irsa_trust(oidc.arn, self.oidc_issuer, "kube-system", "aws-load-balancer-controller"),
            tags=base,
            opts=child,
        )
        policy = aws.iam.RolePolicy(
            f"{name}-lbc-policy", role=controller_role.id, policy=LB_CONTROLLER_POLICY.read_text(), opts=child
        )
        # Its webhooks (failurePolicy: Fail) reject Services and TargetGroupBindings while it is not
        # running: it needs nodes to run on and its IAM permissions before the server is deployed.
        return k8s.helm.v3.Release(
            f"{name}-lb-controller",
            name="aws-load-balancer-controller",
            namespace="kube-system",
            chart="aws-load-balancer-controller",
            version=LB_CONTROLLER_CHART_VERSION,
            repository_opts={"repo": "https://aws.github.io/eks-charts"},
            values={
                "clusterName": cluster.name,
                "region": region,
                "vpcId": vpc_id,
                "serviceAccount": {
                    "create": True,
                    "name": "aws-load-balancer-controller",
                    "annotations": {"eks.amazonaws.com/role-arn": controller_role.arn},
                },
            },
            opts=pulumi.ResourceOptions(parent=self, provider=self.provider, depends_on=[nodes, policy]),
        )

    def _create(self, name: str, config: ClusterConfig, environment: str, *, vpc_id, subnet_ids, region) -> None:
        child = pulumi.ResourceOptions(parent=self)
        base = tags(environment, "cluster")
        cluster = self._control_plane(name, config, environment, subnet_ids, base, child)

        nodes = self._node_group(name, config, environment, cluster, subnet_ids, base, child)

        issuer = cluster.identities[0].oidcs[0].issuer
        oidc = aws.iam.OpenIdConnectProvider(
            f"{name}-oidc", url=issuer, client_id_lists=["sts.amazonaws.com"], tags=base, opts=child
        )
        self.name_out = cluster.name
        self.oidc_issuer = issuer
        self.oidc_provider_arn = oidc.arn
        self.security_group_id = cluster.vpc_config.cluster_security_group_id
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=kubeconfig(cluster.name, cluster.endpoint, cluster.certificate_authority.data),
            opts=child,
        )

        self.lb_controller = self._lb_controller(name, environment, cluster, oidc, nodes, region, vpc_id, base, child)
