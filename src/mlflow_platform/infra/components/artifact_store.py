"""The S3 artifact store: private, SSE-KMS, versioned, TLS-only, tiered, logged."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from ...config import ArtifactStoreConfig
from ._common import output_policy, tags


class ArtifactStore(pulumi.ComponentResource):
    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]
    kms_key_arn: pulumi.Output[str]
    log_bucket_name: pulumi.Output[str]
    log_bucket_arn: pulumi.Output[str]
    prefix: str

    def __init__(
        self,
        name: str,
        config: ArtifactStoreConfig,
        environment: str,
        account_id: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("mlflow-platform:aws:ArtifactStore", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        base = tags(environment, "artifact-store")
        self.prefix = config.prefix

        key = self._key(name, environment, child)
        logs = self._log_bucket(name, config, environment, account_id, base, child)
        bucket = self._artifact_bucket(name, config, environment, account_id, base, key, logs, child)

        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.kms_key_arn = key.arn
        # The name only once the bucket policy lets ELB deliver: an ALB enabling access logs before
        # the policy exists fails with "Access Denied for bucket" (ELB access-log docs, bucket permissions).
        self.log_bucket_arn = logs.arn
        self.log_bucket_name = pulumi.Output.all(logs.bucket, self._log_policy.id).apply(lambda a: a[0])
        self.register_outputs(
            {
                "bucketName": self.bucket_name,
                "bucketArn": self.bucket_arn,
                "kmsKeyArn": self.kms_key_arn,
                "logBucketName": self.log_bucket_name,
            }
        )

    def _key(self, name: str, environment: str, child: pulumi.ResourceOptions) -> aws.kms.Key:
        key = aws.kms.Key(
            f"{name}-key",
            description=f"mlflow {environment} artifacts",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            tags=tags(environment, "artifact-store"),
            opts=child,
        )
        aws.kms.Alias(
            f"{name}-key-alias", name=f"alias/mlflow-{environment}-artifacts", target_key_id=key.key_id, opts=child
        )
        return key

    def _log_bucket(
        self,
        name: str,
        config: ArtifactStoreConfig,
        environment: str,
        account_id: pulumi.Input[str],
        base: dict,
        child: pulumi.ResourceOptions,
    ) -> aws.s3.Bucket:
        logs = aws.s3.Bucket(
            f"{name}-logs",
            bucket=pulumi.Output.concat("mlflow-", environment, "-logs-", account_id),
            force_destroy=config.force_destroy,
            tags={**base, "Purpose": "access-logs"},
            opts=child,
        )
        self._harden(f"{name}-logs", logs, sse={"sse_algorithm": "AES256"})  # log delivery needs SSE-S3
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-logs-lifecycle",
            bucket=logs.id,
            rules=[
                {"id": "expire-logs", "status": "Enabled", "filter": {}, "expiration": {"days": 90}},
                {
                    "id": "abort-multipart",
                    "status": "Enabled",
                    "filter": {},
                    "abort_incomplete_multipart_upload": {"days_after_initiation": 1},
                },
            ],
            opts=child,
        )
        self._log_policy = aws.s3.BucketPolicy(
            f"{name}-logs-policy",
            bucket=logs.id,
            policy=output_policy(
                _deny_insecure_transport(logs.arn),
                {
                    "Sid": "S3ServerAccessLogs",
                    "Effect": "Allow",
                    "Principal": {"Service": "logging.s3.amazonaws.com"},
                    "Action": "s3:PutObject",
                    "Resource": pulumi.Output.concat(logs.arn, "/s3-access/*"),
                    "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
                },
                {
                    "Sid": "AlbAccessLogs",
                    "Effect": "Allow",
                    "Principal": {"Service": "logdelivery.elasticloadbalancing.amazonaws.com"},
                    "Action": "s3:PutObject",
                    # ELB writes under <prefix>/AWSLogs/<account id>/: only this account's ALBs.
                    "Resource": pulumi.Output.concat(logs.arn, "/alb/AWSLogs/", account_id, "/*"),
                },
            ),
            opts=child,
        )
        return logs

    def _artifact_bucket(
        self,
        name: str,
        config: ArtifactStoreConfig,
        environment: str,
        account_id: pulumi.Input[str],
        base: dict,
        key: aws.kms.Key,
        logs: aws.s3.Bucket,
        child: pulumi.ResourceOptions,
    ) -> aws.s3.Bucket:
        bucket = aws.s3.Bucket(
            f"{name}-bucket",
            bucket=config.bucket or pulumi.Output.concat("mlflow-", environment, "-artifacts-", account_id),
            force_destroy=config.force_destroy,
            tags=base,
            opts=child,
        )
        self._harden(f"{name}-bucket", bucket, sse={"sse_algorithm": "aws:kms", "kms_master_key_id": key.arn})
        aws.s3.BucketVersioning(
            f"{name}-versioning", bucket=bucket.id, versioning_configuration={"status": "Enabled"}, opts=child
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=bucket.id,
            rules=_artifact_lifecycle_rules(config),
            opts=child,
        )
        aws.s3.BucketLogging(
            f"{name}-logging", bucket=bucket.id, target_bucket=logs.id, target_prefix="s3-access/", opts=child
        )
        aws.s3.BucketPolicy(
            f"{name}-policy", bucket=bucket.id, policy=output_policy(_deny_insecure_transport(bucket.arn)), opts=child
        )
        return bucket

    def _harden(self, name: str, bucket: aws.s3.Bucket, sse: dict) -> None:
        child = pulumi.ResourceOptions(parent=self)
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership", bucket=bucket.id, rule={"object_ownership": "BucketOwnerEnforced"}, opts=child
        )
        aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=bucket.id,
            rules=[
                {
                    "apply_server_side_encryption_by_default": sse,
                    "bucket_key_enabled": sse["sse_algorithm"] == "aws:kms",
                }
            ],
            opts=child,
        )


def _deny_insecure_transport(arn: pulumi.Output[str]) -> dict:
    return {
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [arn, pulumi.Output.concat(arn, "/*")],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def _artifact_lifecycle_rules(config: ArtifactStoreConfig) -> list[dict]:
    """The guide's tiering (IA, then Glacier) under the prefix, tmp/ expiry, old versions, stale uploads."""
    return [
        {
            "id": "tier-artifacts",
            "status": "Enabled",
            "filter": {"prefix": f"{config.prefix}/"},
            "transitions": [
                {"days": config.infrequent_access_days, "storage_class": "STANDARD_IA"},
                {"days": config.glacier_days, "storage_class": "GLACIER"},
            ],
        },
        {
            "id": "expire-tmp",
            "status": "Enabled",
            "filter": {"prefix": "tmp/"},
            "expiration": {"days": config.tmp_expiration_days},
        },
        {
            "id": "expire-noncurrent-versions",
            "status": "Enabled",
            "filter": {},
            "noncurrent_version_expiration": {"noncurrent_days": config.noncurrent_version_expiration_days},
        },
        {
            "id": "abort-incomplete-multipart",
            "status": "Enabled",
            "filter": {},
            "abort_incomplete_multipart_upload": {"days_after_initiation": config.abort_incomplete_multipart_days},
        },
    ]
