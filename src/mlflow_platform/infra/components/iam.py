"""IAM: the server's IRSA role (its bucket prefix and key only) and GitHub OIDC roles for CI."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from ...config import GithubConfig
from ._common import output_policy, policy_json, tags

GITHUB_OIDC_URL = "https://token.actions.githubusercontent.com"


def irsa_trust(
    oidc_provider_arn: pulumi.Input[str], issuer: pulumi.Input[str], namespace: str, service_account: str
) -> pulumi.Output[str]:
    """Only this Kubernetes service account may assume the role."""
    host = pulumi.Output.from_input(issuer).apply(lambda url: url.removeprefix("https://"))
    return output_policy(
        {
            "Effect": "Allow",
            "Principal": {"Federated": oidc_provider_arn},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {
                "StringEquals": {
                    pulumi.Output.concat(host, ":sub"): f"system:serviceaccount:{namespace}:{service_account}",
                    pulumi.Output.concat(host, ":aud"): "sts.amazonaws.com",
                }
            },
        }
    )


def boundary_name(environment: str) -> str:
    return f"mlflow-{environment}-workload-boundary"


#: The most any role this stack creates may do (a permissions boundary grants nothing by itself):
#: what EKS, its nodes, the LB controller and the server use, and IAM only to read and to create
#: the service-linked roles ELB/EKS need. No role the deploy role creates can change IAM.
WORKLOAD_SERVICES = (
    "ec2:*",
    "elasticloadbalancing:*",
    "eks:*",
    "eks-auth:*",
    "autoscaling:*",
    "ecr:*",
    "s3:*",
    "kms:*",
    "logs:*",
    "cloudwatch:*",
    "acm:Describe*",
    "acm:List*",
    "wafv2:*",
    "waf-regional:*",
    "shield:*",
    "cognito-idp:DescribeUserPoolClient",
    "tag:GetResources",
)


class WorkloadBoundary(pulumi.ComponentResource):
    """The permissions boundary every workload role carries. The deploy role may create and change
    roles only with it attached, and may neither edit it nor remove it (AWS's delegation pattern:
    https://docs.aws.amazon.com/IAM/latest/UserGuide/access_policies_boundaries.html). Creating or
    changing it needs an administrator, like the CI roles."""

    arn: pulumi.Output[str]

    def __init__(self, name: str, environment: str, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-platform:aws:WorkloadBoundary", name, None, opts)
        policy = aws.iam.Policy(
            f"{name}-policy",
            name=boundary_name(environment),
            description=f"Permissions boundary of the mlflow {environment} workload roles",
            policy=policy_json(
                {"Sid": "WorkloadServices", "Effect": "Allow", "Action": list(WORKLOAD_SERVICES), "Resource": "*"},
                {
                    "Sid": "ReadIamAndServiceLinkedRoles",
                    "Effect": "Allow",
                    "Action": ["iam:Get*", "iam:List*", "iam:CreateServiceLinkedRole"],
                    "Resource": "*",
                },
            ),
            tags=tags(environment, "iam"),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.arn = policy.arn
        self.register_outputs({"arn": self.arn})


class ServerRole(pulumi.ComponentResource):
    """Least privilege for proxied artifacts: list, read, write, delete under `<prefix>/` only."""

    arn: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        environment: str,
        *,
        bucket_arn: pulumi.Input[str],
        prefix: str,
        kms_key_arn: pulumi.Input[str],
        oidc_provider_arn: pulumi.Input[str],
        oidc_issuer: pulumi.Input[str],
        namespace: str,
        service_account: str,
        boundary_arn: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("mlflow-platform:aws:ServerRole", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(
            f"{name}-role",
            name=f"mlflow-{environment}-server",
            permissions_boundary=boundary_arn,
            assume_role_policy=irsa_trust(oidc_provider_arn, oidc_issuer, namespace, service_account),
            tags=tags(environment, "iam"),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-artifacts",
            role=role.id,
            policy=output_policy(
                {
                    "Sid": "ListPrefix",
                    "Effect": "Allow",
                    "Action": "s3:ListBucket",
                    "Resource": bucket_arn,
                    "Condition": {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}},
                },
                {
                    "Sid": "ObjectsUnderPrefix",
                    "Effect": "Allow",
                    "Action": [
                        "s3:GetObject",
                        "s3:PutObject",
                        "s3:DeleteObject",
                        "s3:AbortMultipartUpload",
                        "s3:ListMultipartUploadParts",
                    ],
                    "Resource": pulumi.Output.concat(bucket_arn, f"/{prefix}/*"),
                },
                {
                    "Sid": "ArtifactKey",
                    "Effect": "Allow",
                    "Action": ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"],
                    "Resource": kms_key_arn,
                },
            ),
            opts=child,
        )
        self.arn = role.arn
        self.register_outputs({"arn": self.arn})


class GithubCiRoles(pulumi.ComponentResource):
    """Roles GitHub Actions assumes by OIDC: previews read, deploys (one Environment) change."""

    preview_role_arn: pulumi.Output[str]
    deploy_role_arn: pulumi.Output[str]
    promote_role_arn: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        config: GithubConfig,
        environment: str,
        *,
        lock_table_arn: pulumi.Input[str],
        account_id: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("mlflow-platform:aws:GithubCiRoles", name, None, opts)
        self._name, self._env = name, environment
        self._child, self._base = pulumi.ResourceOptions(parent=self), tags(environment, "ci")
        repo = config.repository
        self._provider_arn = self._oidc_provider(config, account_id)
        # Pull requests and the default branch only: a pushed feature branch gets nothing.
        preview = self._role(
            "preview", [f"repo:{repo}:pull_request", f"repo:{repo}:ref:refs/heads/{config.preview_branch}"]
        )
        aws.iam.RolePolicyAttachment(
            f"{name}-preview-readonly",
            role=preview.name,
            policy_arn="arn:aws:iam::aws:policy/ReadOnlyAccess",
            opts=self._child,
        )
        deploy = self._role("deploy", [f"repo:{repo}:environment:{config.deploy_environment or environment}"])
        self._deploy_permissions(deploy, environment)
        # Model repositories promote through `mlflow-platform promote --lock dynamodb://…`: they need
        # the lock items and nothing else in AWS (the registry itself is reached over HTTPS).
        # The default branch and the GitHub Environment named after the stack, not any ref of the repo.
        promoters = config.promotion_repositories or (repo,)
        promote = self._role(
            "promote",
            [s for r in promoters for s in (f"repo:{r}:ref:refs/heads/main", f"repo:{r}:environment:{environment}")],
        )
        aws.iam.RolePolicy(
            f"{name}-promote-lock",
            role=promote.id,
            policy=output_policy(
                {
                    "Sid": "PromotionLock",
                    "Effect": "Allow",
                    "Action": ["dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:GetItem"],
                    "Resource": lock_table_arn,
                }
            ),
            opts=self._child,
        )
        self.preview_role_arn = preview.arn
        self.deploy_role_arn = deploy.arn
        self.promote_role_arn = promote.arn
        self.register_outputs(
            {
                "previewRoleArn": self.preview_role_arn,
                "deployRoleArn": self.deploy_role_arn,
                "promoteRoleArn": self.promote_role_arn,
            }
        )

    def _role(self, purpose: str, subjects: list[str]) -> aws.iam.Role:
        """A role GitHub Actions may assume from the given token subjects (repo, ref, environment)."""
        trust = output_policy(
            {
                "Effect": "Allow",
                "Principal": {"Federated": self._provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {"token.actions.githubusercontent.com:aud": "sts.amazonaws.com"},
                    "StringLike": {"token.actions.githubusercontent.com:sub": subjects},
                },
            }
        )
        return aws.iam.Role(
            f"{self._name}-{purpose}",
            name=f"mlflow-{self._env}-ci-{purpose}",
            assume_role_policy=trust,
            max_session_duration=3600,
            tags=self._base,
            opts=self._child,
        )

    def _oidc_provider(self, config: GithubConfig, account_id: pulumi.Input[str]) -> pulumi.Input[str]:
        if config.oidc_provider_arn:
            return config.oidc_provider_arn
        if config.create_oidc_provider:
            return aws.iam.OpenIdConnectProvider(
                f"{self._name}-oidc",
                url=GITHUB_OIDC_URL,
                client_id_lists=["sts.amazonaws.com"],
                tags=self._base,
                opts=self._child,
            ).arn
        # IAM names an OIDC provider by its URL: the account's one has this ARN whoever created it.
        host = GITHUB_OIDC_URL.removeprefix("https://")
        return pulumi.Output.concat("arn:aws:iam::", account_id, ":oidc-provider/", host)

    def _deploy_permissions(self, deploy: aws.iam.Role, environment: str) -> None:
        aws.iam.RolePolicyAttachment(
            f"{self._name}-deploy-poweruser",
            role=deploy.name,
            policy_arn="arn:aws:iam::aws:policy/PowerUserAccess",
            opts=self._child,
        )
        # PowerUser excludes IAM: allow it for this environment's roles only, never for the CI roles
        # themselves (a role that may edit itself can grant itself anything).
        aws.iam.RolePolicy(
            f"{self._name}-deploy-iam",
            role=deploy.id,
            policy=policy_json(*deploy_iam_statements(environment)),
            opts=self._child,
        )


#: What can widen a role: allowed to the deploy role only with the boundary attached.
ROLE_CHANGES = (
    "iam:CreateRole",
    "iam:PutRolePermissionsBoundary",
    "iam:AttachRolePolicy",
    "iam:DetachRolePolicy",
    "iam:PutRolePolicy",
    "iam:DeleteRolePolicy",
)
ROLE_MANAGEMENT = (
    "iam:GetRole",
    "iam:GetRolePolicy",
    "iam:ListRolePolicies",
    "iam:ListAttachedRolePolicies",
    "iam:ListInstanceProfilesForRole",
    "iam:TagRole",
    "iam:UntagRole",
    "iam:UpdateRole",
    "iam:UpdateRoleDescription",
    "iam:UpdateAssumeRolePolicy",
    "iam:DeleteRole",
    "iam:PassRole",
)
BOUNDARY_GUARD = (
    "iam:DeleteRolePermissionsBoundary",
    "iam:CreatePolicyVersion",
    "iam:DeletePolicy",
    "iam:DeletePolicyVersion",
    "iam:SetDefaultPolicyVersion",
)


def deploy_iam_statements(environment: str) -> list[dict]:
    """The deploy role's IAM: its own environment's roles, only with the workload boundary attached,
    never the boundary itself, never the CI roles (a role that may edit itself can grant itself anything)."""
    roles = [f"arn:aws:iam::*:role/mlflow-{environment}-*"]
    boundary = f"arn:aws:iam::*:policy/{boundary_name(environment)}"
    return [
        {
            "Sid": "ChangeRolesOnlyWithTheBoundary",
            "Effect": "Allow",
            "Action": list(ROLE_CHANGES),
            "Resource": roles,
            "Condition": {"ArnLike": {"iam:PermissionsBoundary": boundary}},
        },
        {
            "Sid": "EnvironmentRoles",
            "Effect": "Allow",
            "Action": list(ROLE_MANAGEMENT),
            "Resource": roles,
        },
        {
            "Sid": "KeepTheBoundary",
            "Effect": "Deny",
            "Action": list(BOUNDARY_GUARD),
            "Resource": [*roles, boundary],
        },
        {
            "Sid": "ReadIam",
            "Effect": "Allow",
            "Action": ["iam:GetPolicy", "iam:GetPolicyVersion", "iam:GetOpenIDConnectProvider"],
            "Resource": ["arn:aws:iam::*:policy/*", "arn:aws:iam::*:oidc-provider/*"],
        },
        {
            "Sid": "ListIam",
            "Effect": "Allow",
            "Action": ["iam:ListPolicies", "iam:ListOpenIDConnectProviders"],
            "Resource": "*",
        },
        {
            "Sid": "ServiceLinkedRoles",
            "Effect": "Allow",
            "Action": "iam:CreateServiceLinkedRole",
            "Resource": "arn:aws:iam::*:role/aws-service-role/*",
        },
        {
            "Sid": "NeverTheCiRoles",
            "Effect": "Deny",
            "Action": "iam:*",
            "Resource": [f"arn:aws:iam::*:role/mlflow-{environment}-ci-*"],
        },
    ]
