"""Where the artifact store's bytes are: per workspace, per experiment, per storage class.

The server proxies artifacts under ``s3://<bucket>/<prefix>/``: the default workspace keeps
MLflow's layout (``<experiment id>/…``), a team's workspace lives under
``workspaces/<workspace>/<experiment id>/…``. One listing of the prefix (ListObjectsV2 names each
object's storage class, which the lifecycle rules change) gives every figure; at tens of millions
of objects S3 Inventory is the cheaper source, and the same grouping applies to its CSV.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

DEFAULT_WORKSPACE = "default"


@dataclass
class Usage:
    objects: int = 0
    bytes: int = 0

    def add(self, size: int) -> None:
        self.objects += 1
        self.bytes += size


@dataclass
class StorageReport:
    bucket: str
    prefix: str
    total: Usage = field(default_factory=Usage)
    by_workspace: dict[str, Usage] = field(default_factory=lambda: defaultdict(Usage))
    by_experiment: dict[tuple[str, str], Usage] = field(default_factory=lambda: defaultdict(Usage))
    by_class: dict[str, Usage] = field(default_factory=lambda: defaultdict(Usage))

    def top_experiments(self, count: int) -> list[tuple[tuple[str, str], Usage]]:
        return sorted(self.by_experiment.items(), key=lambda item: -item[1].bytes)[:count]


def owner(relative_key: str) -> tuple[str, str]:
    """(workspace, experiment folder) of a key below the artifact prefix."""
    parts = relative_key.split("/")
    if parts[0] == "workspaces" and len(parts) > 2:
        return parts[1], parts[2]
    return DEFAULT_WORKSPACE, parts[0] if len(parts) > 1 else "(top level)"


def summarize(bucket: str, prefix: str, objects: Iterable[dict]) -> StorageReport:
    """Group ListObjectsV2 entries (``Key``, ``Size``, ``StorageClass``)."""
    report = StorageReport(bucket, prefix)
    base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    for item in objects:
        key, size = item["Key"], int(item["Size"])
        workspace, experiment = owner(key[len(base) :] if key.startswith(base) else key)
        report.total.add(size)
        report.by_workspace[workspace].add(size)
        report.by_experiment[(workspace, experiment)].add(size)
        report.by_class[item.get("StorageClass") or "STANDARD"].add(size)
    return report


def storage_report(s3, bucket: str, prefix: str) -> StorageReport:
    """List ``s3://bucket/prefix/`` once (paginated) and group it."""
    base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base)
    return summarize(bucket, prefix, (item for page in pages for item in page.get("Contents", [])))
