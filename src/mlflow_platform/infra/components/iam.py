"""IAM: the server's IRSA role (its bucket prefix and key only) and GitHub OIDC roles for CI."""

from __future__ import annotations

from dataclasses import dataclass

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


#: What the teams Job needs to keep generated user passwords (one secret per user, under a prefix).
TEAM_SECRET_ACTIONS = (
    "secretsmanager:CreateSecret",
    "secretsmanager:PutSecretValue",
    "secretsmanager:GetSecretValue",
    "secretsmanager:DescribeSecret",
    "secretsmanager:TagResource",
)

#: What the migration Job needs to snapshot the instance before a schema change and wait for it.
#: CreateDBSnapshot authorizes on the instance and the new snapshot; tags on create need
#: AddTagsToResource (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonrds.html).
SNAPSHOT_ACTIONS = ("rds:CreateDBSnapshot", "rds:AddTagsToResource", "rds:DescribeDBSnapshots")


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
                    "Sid": "SnapshotBeforeSchemaUpgrade",
                    "Effect": "Allow",
                    "Action": list(SNAPSHOT_ACTIONS),
                    "Resource": "*",
                },
                {
                    "Sid": "TeamUserPasswords",
                    "Effect": "Allow",
                    "Action": list(TEAM_SECRET_ACTIONS),
                    "Resource": "*",
                },
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


@dataclass(frozen=True)
class Irsa:
    """How a workload role is assumed (the cluster's OIDC provider, one namespace) and bounded."""

    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer: pulumi.Input[str]
    namespace: str
    boundary_arn: pulumi.Input[str]


def _workload_role(
    parent: pulumi.Resource, name: str, purpose: tuple[str, str], irsa: Irsa, account: str, *statements
) -> aws.iam.Role:
    """``mlflow-<env>-<purpose>``: assumable by one service account only, bounded, with one policy
    (``purpose`` is the environment and the role's purpose)."""
    environment, role_purpose = purpose
    child = pulumi.ResourceOptions(parent=parent)
    role = aws.iam.Role(
        f"{name}-role",
        name=f"mlflow-{environment}-{role_purpose}",
        permissions_boundary=irsa.boundary_arn,
        assume_role_policy=irsa_trust(irsa.oidc_provider_arn, irsa.oidc_issuer, irsa.namespace, account),
        tags=tags(environment, "iam"),
        opts=child,
    )
    aws.iam.RolePolicy(f"{name}-policy", role=role.id, policy=output_policy(*statements), opts=child)
    return role


class MigrationRole(pulumi.ComponentResource):
    """The migration Job's IRSA role: snapshot this instance, under the upgrade prefix, and nothing else."""

    arn: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        environment: str,
        *,
        instance_arn: pulumi.Input[str],
        instance_identifier: pulumi.Input[str],
        irsa: Irsa,
        service_account: str,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("mlflow-platform:aws:MigrationRole", name, None, opts)
        # arn:aws:rds:<region>:<account>:db:<id> -> arn:aws:rds:<region>:<account>:snapshot:<id>-upgrade-*
        snapshots = pulumi.Output.all(instance_arn, instance_identifier).apply(
            lambda v: v[0].rsplit(":db:", 1)[0] + f":snapshot:{v[1]}-upgrade-*"
        )
        resources = [instance_arn, snapshots]
        role = _workload_role(
            self,
            name,
            (environment, "migration"),
            irsa,
            service_account,
            {
                "Sid": "SnapshotThisInstance",
                "Effect": "Allow",
                "Action": ["rds:CreateDBSnapshot"],
                "Resource": resources,
            },
            {
                "Sid": "TagAndWatchItsSnapshots",
                "Effect": "Allow",
                "Action": ["rds:AddTagsToResource", "rds:DescribeDBSnapshots"],
                "Resource": resources,
            },
        )
        self.arn = role.arn
        self.register_outputs({"arn": self.arn})


def team_secrets_prefix(environment: str) -> str:
    return f"mlflow-{environment}/users/"


class TeamsRole(pulumi.ComponentResource):
    """The teams Job's IRSA role: the secrets of the users it creates, under one prefix, nothing else."""

    arn: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        environment: str,
        *,
        account_id: pulumi.Input[str],
        region: pulumi.Input[str],
        irsa: Irsa,
        service_account: str,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("mlflow-platform:aws:TeamsRole", name, None, opts)
        # Secrets Manager appends a random suffix to a secret's ARN: "<name>-??????" matches it.
        secrets = pulumi.Output.concat(
            "arn:aws:secretsmanager:", region, ":", account_id, ":secret:", team_secrets_prefix(environment), "*"
        )
        statement = {
            "Sid": "UserPasswords",
            "Effect": "Allow",
            "Action": list(TEAM_SECRET_ACTIONS),
            "Resource": secrets,
        }
        role = _workload_role(self, name, (environment, "teams"), irsa, service_account, statement)
        self.arn = role.arn
        self.register_outputs({"arn": self.arn})


def github_subject(repository: str, environment: str) -> str:
    """The `sub` GitHub issues to a job that declares `environment:` (it then names neither the
    event nor the ref): https://docs.github.com/en/actions/reference/security/oidc#example-subject-claims."""
    return f"repo:{repository}:environment:{environment}"


def ci_environments(config: GithubConfig, environment: str) -> dict[str, str]:
    """The GitHub Environment each CI role is bound to (the workflows' `environment:` keys)."""
    return {
        "preview": config.preview_environment or f"{environment}-preview",
        "drift": config.drift_environment or f"{environment}-drift",
        "deploy": config.deploy_environment or environment,
    }


class GithubCiRoles(pulumi.ComponentResource):
    """Roles GitHub Actions assumes by OIDC, each bound to one GitHub Environment: PR previews read,
    nightly drift also reads this stack's secrets (a refresh reads secret versions), deploys change."""

    preview_role_arn: pulumi.Output[str]
    drift_role_arn: pulumi.Output[str]
    deploy_role_arn: pulumi.Output[str]
    promote_role_arn: pulumi.Output[str] | None

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
        bound = ci_environments(config, environment)
        self._provider_arn = self._oidc_provider(config, account_id)
        preview = self._role("preview", [github_subject(repo, bound["preview"])])
        drift = self._role("drift", [github_subject(repo, bound["drift"])])
        for role, purpose in ((preview, "preview"), (drift, "drift")):
            aws.iam.RolePolicyAttachment(
                f"{name}-{purpose}-readonly",
                role=role.name,
                policy_arn="arn:aws:iam::aws:policy/ReadOnlyAccess",
                opts=self._child,
            )
        aws.iam.RolePolicy(
            f"{name}-drift-secrets", role=drift.id, policy=policy_json(*drift_secret_statements(environment)),
            opts=self._child,
        )  # fmt: skip
        deploy = self._role("deploy", [github_subject(repo, bound["deploy"])])
        self._deploy_permissions(deploy, environment)
        # Model repositories promote through `mlflow-platform promote --lock dynamodb://…`: they need
        # the lock items and nothing else in AWS (the registry itself is reached over HTTPS). The
        # promote-model workflow's jobs declare `environment:`, so that is the subject GitHub issues.
        promote = None
        if config.promotion_repositories:  # model repositories; never this one, whose deploys share the names
            promote = self._role("promote", [github_subject(r, environment) for r in config.promotion_repositories])
            self._promote_permissions(promote, lock_table_arn)
        self.roles = {"preview": preview, "drift": drift, "deploy": deploy}
        self.preview_role_arn = preview.arn
        self.drift_role_arn = drift.arn
        self.deploy_role_arn = deploy.arn
        self.promote_role_arn = promote.arn if promote else None
        self.register_outputs(
            {
                "previewRoleArn": self.preview_role_arn,
                "driftRoleArn": self.drift_role_arn,
                "deployRoleArn": self.deploy_role_arn,
                "promoteRoleArn": self.promote_role_arn,
            }
        )

    def _role(self, purpose: str, subjects: list[str]) -> aws.iam.Role:
        """A role GitHub Actions may assume from exactly these token subjects."""
        trust = output_policy(
            {
                "Effect": "Allow",
                "Principal": {"Federated": self._provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
                        "token.actions.githubusercontent.com:sub": subjects,
                    },
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

    def _promote_permissions(self, promote: aws.iam.Role, lock_table_arn: pulumi.Input[str]) -> None:
        aws.iam.RolePolicy(
            f"{self._name}-promote-lock",
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


def drift_secret_statements(environment: str) -> list[dict]:
    """`pulumi preview --refresh` reads every SecretVersion the stack owns (GetSecretValue, and
    kms:Decrypt through Secrets Manager for the customer key): this stack's secrets, nothing else."""
    return [
        {
            "Sid": "ReadThisStacksSecrets",
            "Effect": "Allow",
            "Action": ["secretsmanager:GetSecretValue"],
            "Resource": f"arn:aws:secretsmanager:*:*:secret:mlflow/{environment}/*",
        },
        {
            "Sid": "DecryptThemThroughSecretsManager",
            "Effect": "Allow",
            "Action": ["kms:Decrypt"],
            "Resource": "arn:aws:kms:*:*:key/*",  # the stack's key and Secrets Manager's, through it only
            "Condition": {"StringLike": {"kms:ViaService": "secretsmanager.*.amazonaws.com"}},
        },
    ]


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
            # Reading stays allowed: preflight reads this very role (an explicit Deny wins over
            # every Allow, https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html).
            "Sid": "NeverChangeTheCiRoles",
            "Effect": "Deny",
            "NotAction": ["iam:Get*", "iam:List*"],
            "Resource": [f"arn:aws:iam::*:role/mlflow-{environment}-ci-*"],
        },
    ]
