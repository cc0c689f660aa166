"""Run the policy pack over a captured stack, as `pulumi preview --policy-pack` would.

The props are the mocks' inputs (camelCase, secrets unwrapped by pulumi-policy's deserializer),
property dependencies are the engine's own, and each policy gets its config with the schema's
defaults filled in, like the analyzer does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from .plan import Capture

COMPONENT_PREFIX = "mlflow-platform:"


@dataclass(frozen=True)
class Violation:
    policy: str
    enforcement: str
    resource: str
    message: str
    remediation: str

    @property
    def mandatory(self) -> bool:
        return self.enforcement == EnforcementLevel.MANDATORY.value


def load_policies() -> list[Policy]:
    from .policies import POLICIES

    return POLICIES


def load_policy_config(project_root: Path, stack: str) -> dict[str, Any]:
    """`policies/config/<stack>.json`: what `--policy-pack-config` passes for that stack."""
    path = project_root / "policies" / "config" / f"{stack}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _policy_config(policy: Policy, given: dict[str, Any]) -> dict[str, Any]:
    defaults = {}
    if policy.config_schema is not None:
        defaults = {k: v["default"] for k, v in policy.config_schema.properties.items() if "default" in v}
    return {**defaults, **{k: v for k, v in given.items() if k != "enforcementLevel"}}


def policy_resources(capture: Capture) -> list[PolicyResource]:
    options = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])
    resources = {
        r.urn: PolicyResource(r.type, r.inputs, r.urn, r.name, options, None, None, [], {}) for r in capture.resources
    }
    for r in capture.resources:
        resources[r.urn].property_dependencies = {
            key: [resources[urn] for urn in urns if urn in resources] for key, urns in r.property_dependencies.items()
        }
    return list(resources.values())


def evaluate(capture: Capture, policies: list[Policy], config: dict[str, Any] | None = None) -> list[Violation]:
    config = config or {}
    resources = policy_resources(capture)
    names = {r.urn: r.name for r in resources}
    violations: list[Violation] = []
    for policy in policies:
        given = config.get(policy.name, {})
        if isinstance(given, str):  # the config file may give just the enforcement level
            given = {"enforcementLevel": given}
        level = EnforcementLevel(
            given.get("enforcementLevel") or (policy.enforcement_level or EnforcementLevel.ADVISORY).value
        )
        if level is EnforcementLevel.DISABLED:
            continue
        policy_config = _policy_config(policy, given)

        def reporter(default_resource: str, policy: Policy = policy, level: EnforcementLevel = level):
            def report(message: str, urn: str | None = None) -> None:
                violations.append(
                    Violation(
                        policy.name,
                        level.value,
                        names.get(urn, default_resource) if urn else default_resource,
                        message,
                        policy.remediation_steps or "",
                    )
                )

            return report

        if isinstance(policy, ResourceValidationPolicy):
            for resource in resources:
                if resource.resource_type.startswith(COMPONENT_PREFIX):
                    continue  # the analyzer validates provider resources, not components
                args = ResourceValidationArgs(
                    resource.resource_type,
                    resource.props,
                    resource.urn,
                    resource.name,
                    resource.opts,
                    None,
                    policy_config,
                )
                _run(policy, args, reporter(resource.name))
        elif isinstance(policy, StackValidationPolicy):
            _run(policy, StackValidationArgs(resources, policy_config), reporter("(stack)"))
    return violations


def _run(policy: Policy, args: Any, report) -> None:
    try:
        policy.validate(args, report)
    except Exception as exc:  # the analyzer's _NotApplicableError included: treat as not applicable
        if type(exc).__name__ != "_NotApplicableError":
            raise
