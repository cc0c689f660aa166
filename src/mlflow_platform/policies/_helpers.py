"""Reading resource props the way the analyzer hands them over (camelCase, secrets unwrapped)."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import PolicyConfigSchema, PolicyResource, StackValidationArgs

PRODUCTION_SCHEMA = PolicyConfigSchema(
    properties={
        "production": {
            "type": "boolean",
            "default": False,
            "description": "Apply production-only requirements (set in config/prod.json).",
        },
    }
)

S3_BUCKET = "aws:s3/bucket:Bucket"
WORKLOAD_KINDS = ("kubernetes:apps/v1:Deployment", "kubernetes:batch/v1:Job", "kubernetes:batch/v1:CronJob")
SERVER_APP = "mlflow-server"


def as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def policy_document(value: Any) -> dict:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return {}
    return value or {}


def statements(value: Any) -> list[dict]:
    return as_list(policy_document(value).get("Statement"))


def of_type(args: StackValidationArgs, *types: str) -> list[PolicyResource]:
    return [r for r in args.resources if r.resource_type in types]


def on_bucket(args: StackValidationArgs, type_: str, bucket: str) -> list[PolicyResource]:
    """The split S3 resources of pulumi-aws v7 that configure one bucket."""
    return [r for r in of_type(args, type_) if r.props.get("bucket") == bucket]


def is_log_bucket(bucket: PolicyResource) -> bool:
    return (bucket.props.get("tags") or {}).get("Purpose") == "access-logs"


def pod_spec(props: Mapping[str, Any], resource_type: str) -> dict:
    spec = props.get("spec") or {}
    if resource_type.endswith(":CronJob"):
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    return (spec.get("template") or {}).get("spec") or {}


def containers(props: Mapping[str, Any], resource_type: str) -> list[dict]:
    spec = pod_spec(props, resource_type)
    return as_list(spec.get("containers")) + as_list(spec.get("initContainers"))


def env_of(container: Mapping[str, Any]) -> dict[str, dict]:
    return {e.get("name"): e for e in as_list(container.get("env"))}


def server_containers(args: StackValidationArgs) -> Iterable[tuple[PolicyResource, dict]]:
    """The tracking server's containers: Deployments whose command is `mlflow server`."""
    for resource in of_type(args, "kubernetes:apps/v1:Deployment"):
        for container in containers(resource.props, resource.resource_type):
            command = as_list(container.get("command")) + as_list(container.get("args"))
            if command[:2] == ["mlflow", "server"]:
                yield resource, container


def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv and argv.index(name) + 1 < len(argv) else None


def gunicorn_option(argv: list[str], name: str) -> str | None:
    opts = option(argv, "--gunicorn-opts")
    if opts is None:
        return None
    tokens = shlex.split(opts)
    for i, token in enumerate(tokens):
        if token.startswith(f"{name}="):
            return token.split("=", 1)[1]
        if token == name and i + 1 < len(tokens):
            return tokens[i + 1]
    return None
