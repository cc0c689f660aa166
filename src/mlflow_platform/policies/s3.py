"""S3: the artifact bucket and its log bucket. pulumi-aws v7 configures a bucket through separate
resources, so these are stack policies that join each bucket with its configuration."""

from __future__ import annotations

from pulumi_policy import EnforcementLevel, ReportViolation, StackValidationArgs, StackValidationPolicy

from ._helpers import S3_BUCKET, as_list, is_log_bucket, of_type, on_bucket, statements


def _buckets(args: StackValidationArgs):
    for bucket in of_type(args, S3_BUCKET):
        yield bucket, bucket.props.get("bucket")


def _kms_encryption(args: StackValidationArgs, report: ReportViolation) -> None:
    for bucket, name in _buckets(args):
        configs = on_bucket(
            args, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration", name
        )
        algorithms = {
            (rule.get("applyServerSideEncryptionByDefault") or {}).get("sseAlgorithm")
            for config in configs
            for rule in as_list(config.props.get("rules"))
        }
        wanted = {"AES256", "aws:kms"} if is_log_bucket(bucket) else {"aws:kms", "aws:kms:dsse"}
        if not algorithms & wanted:
            found = sorted(filter(None, algorithms)) or "none"
            report(f"bucket {name} has no {'/'.join(sorted(wanted))} default encryption (found {found})", bucket.urn)


def _public_access(args: StackValidationArgs, report: ReportViolation) -> None:
    flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    for bucket, name in _buckets(args):
        blocks = on_bucket(args, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", name)
        if not any(all(block.props.get(flag) is True for flag in flags) for block in blocks):
            report(f"bucket {name} does not block all public access ({', '.join(flags)})", bucket.urn)


def _tls_only(args: StackValidationArgs, report: ReportViolation) -> None:
    for bucket, name in _buckets(args):
        denies = [
            s
            for policy in on_bucket(args, "aws:s3/bucketPolicy:BucketPolicy", name)
            for s in statements(policy.props.get("policy"))
            if s.get("Effect") == "Deny"
            and str(((s.get("Condition") or {}).get("Bool") or {}).get("aws:SecureTransport")).lower() == "false"
        ]
        if not denies:
            report(f"bucket {name} has no policy denying requests without TLS (aws:SecureTransport=false)", bucket.urn)


def _versioning(args: StackValidationArgs, report: ReportViolation) -> None:
    for bucket, name in _buckets(args):
        if is_log_bucket(bucket):
            continue
        versioning = on_bucket(args, "aws:s3/bucketVersioning:BucketVersioning", name)
        if not any((v.props.get("versioningConfiguration") or {}).get("status") == "Enabled" for v in versioning):
            report(f"bucket {name} is not versioned", bucket.urn)


def _lifecycle(args: StackValidationArgs, report: ReportViolation) -> None:
    for bucket, name in _buckets(args):
        if is_log_bucket(bucket):
            continue
        rules = [
            rule
            for config in on_bucket(args, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", name)
            for rule in as_list(config.props.get("rules"))
            if rule.get("status") == "Enabled"
        ]
        tmp = any((rule.get("filter") or {}).get("prefix") == "tmp/" and rule.get("expiration") for rule in rules)
        abort = any(rule.get("abortIncompleteMultipartUpload") for rule in rules)
        missing = [
            what
            for what, ok in (("a tmp/ expiration rule", tmp), ("an abort-incomplete-multipart rule", abort))
            if not ok
        ]
        if missing:
            report(f"bucket {name} lifecycle lacks {' and '.join(missing)}", bucket.urn)


def _access_logging(args: StackValidationArgs, report: ReportViolation) -> None:
    for bucket, name in _buckets(args):
        if is_log_bucket(bucket):
            continue
        if not on_bucket(args, "aws:s3/bucketLogging:BucketLogging", name):
            report(f"bucket {name} has no server access logging", bucket.urn)


POLICIES = [
    StackValidationPolicy(
        name="s3-kms-encryption",
        description="Artifact buckets are encrypted with KMS by default.",
        validate=_kms_encryption,
        enforcement_level=EnforcementLevel.MANDATORY,
        remediation_steps="Add a BucketServerSideEncryptionConfiguration with sseAlgorithm aws:kms "
        "(access-log buckets may use AES256, which log delivery requires).",
    ),
    StackValidationPolicy(
        name="s3-public-access-blocked",
        description="Every bucket blocks all public access.",
        validate=_public_access,
        enforcement_level=EnforcementLevel.MANDATORY,
        remediation_steps="Add a BucketPublicAccessBlock with all four flags true.",
    ),
    StackValidationPolicy(
        name="s3-tls-only",
        description="Every bucket policy denies requests made without TLS.",
        validate=_tls_only,
        enforcement_level=EnforcementLevel.MANDATORY,
        remediation_steps="Add a BucketPolicy statement: Deny s3:* when aws:SecureTransport is false.",
    ),
    StackValidationPolicy(
        name="s3-versioning",
        description="Artifact buckets are versioned.",
        validate=_versioning,
        enforcement_level=EnforcementLevel.MANDATORY,
        remediation_steps="Add a BucketVersioning with status Enabled.",
    ),
    StackValidationPolicy(
        name="s3-lifecycle",
        description="Artifact buckets expire tmp/ and abort incomplete multipart uploads.",
        validate=_lifecycle,
        enforcement_level=EnforcementLevel.MANDATORY,
        remediation_steps="Add a BucketLifecycleConfiguration with a tmp/ expiration rule and an "
        "abortIncompleteMultipartUpload rule.",
    ),
    StackValidationPolicy(
        name="s3-access-logging",
        description="Artifact buckets log access to a log bucket.",
        validate=_access_logging,
        enforcement_level=EnforcementLevel.MANDATORY,
        remediation_steps="Add a BucketLogging targeting the access-log bucket.",
    ),
]
