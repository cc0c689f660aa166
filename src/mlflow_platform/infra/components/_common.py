"""What every component shares: the tag set and policy-document helpers."""

from __future__ import annotations

import json
from typing import Any

import pulumi


def tags(environment: str, component: str) -> dict[str, str]:
    return {
        "Project": "mlflow-platform",
        "Environment": environment,
        "Component": component,
        "ManagedBy": "pulumi",
    }


def policy_json(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def output_policy(*statements: Any) -> pulumi.Output[str]:
    """A policy document whose statements contain Outputs (ARNs known only after creation)."""
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": list(statements)})
