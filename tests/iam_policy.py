"""A small IAM policy evaluator for the CI simulations: the evaluation order AWS documents
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html) for
one account: an explicit Deny wins, then an Allow in the identity policies, intersected with the
permissions boundary when there is one.

It covers exactly what the stacks' policies use: Action/NotAction, Resource/NotResource (ARNs
matched part by part), a Federated principal, and the condition operators StringEquals,
StringLike, ArnLike and ArnEquals on single-valued keys. Key policies, resource policies and
session policies are not modelled (the stacks' roles get everything from identity policies and a
boundary). Anything else raises, so a policy that grows a new operator fails loudly here instead
of being evaluated wrongly. (moto's evaluator knows StringEquals only and turns a Deny whose
condition does not hold into a denial; no PyPI package evaluates a request against a policy set.)
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from typing import Any

OPERATORS = {"StringEquals", "StringLike", "ArnLike", "ArnEquals"}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _like(pattern: str, value: str, *, case: bool) -> bool:
    """IAM's wildcards: `*` any run of characters, `?` one character (fnmatch's `[` is literal here)."""
    pattern = pattern.replace("[", "[[]")
    return fnmatch.fnmatchcase(value, pattern) if case else fnmatch.fnmatchcase(value.lower(), pattern.lower())


def _arn_like(pattern: str, value: str) -> bool:
    """ARNs match component by component: a `*` never reaches across a `:` into the next of the six
    parts (IAM condition operators, "ARN condition operators"); the resource part may hold more colons."""
    if not pattern.startswith("arn:") or not value.startswith("arn:"):
        return _like(pattern, value, case=True)
    expected, actual = pattern.split(":", 5), value.split(":", 5)
    return len(expected) == len(actual) == 6 and all(
        _like(e, a, case=True) for e, a in zip(expected, actual, strict=True)
    )


def _matches(operator: str, expected: str, value: str) -> bool:
    if operator == "StringEquals":
        return value == expected
    if operator == "StringLike":
        return _like(expected, value, case=True)
    return _arn_like(expected, value)  # ArnEquals and ArnLike behave alike, wildcards included


def _condition_holds(condition: dict, context: dict[str, Any]) -> bool:
    """Every operator and key must hold; condition keys are case-insensitive, values are not. A
    single-valued key holds when it matches any of the listed values."""
    lowered = {key.lower(): value for key, value in context.items()}
    for operator, tests in condition.items():
        if operator not in OPERATORS:
            raise NotImplementedError(f"condition operator {operator} is not modelled")
        for key, expected in tests.items():
            value = lowered.get(key.lower())
            if value is None:
                return False  # a missing key fails every operator without IfExists
            if isinstance(value, list):
                raise NotImplementedError(f"{key} is multivalued: ForAnyValue/ForAllValues are not modelled")
            if not any(_matches(operator, e, value) for e in _list(expected)):
                return False
    return True


@dataclass(frozen=True)
class Request:
    action: str
    resource: str = "*"
    context: dict[str, Any] = field(default_factory=dict)
    principal: str | None = None  # a Federated principal, for trust policies


def _applies(statement: dict, request: Request) -> bool:
    if "NotAction" in statement:
        acts = not any(_like(a, request.action, case=False) for a in _list(statement["NotAction"]))
    else:
        acts = any(_like(a, request.action, case=False) for a in _list(statement["Action"]))
    if not acts:
        return False
    if "NotResource" in statement:
        resources, inside = statement["NotResource"], False
    else:
        resources, inside = statement.get("Resource", "*"), True
    if any(_arn_like(r, request.resource) for r in _list(resources)) != inside:
        return False
    if "Principal" in statement:
        federated = _list((statement["Principal"] or {}).get("Federated", []))
        if request.principal not in federated:
            return False
    return _condition_holds(statement.get("Condition") or {}, request.context)


def _statements(policy: str | dict) -> list[dict]:
    document = json.loads(policy) if isinstance(policy, str) else policy
    return _list(document["Statement"])


def decide(request: Request, policies: list[str | dict]) -> str:
    """'deny' (explicit), 'allow', or 'implicit' (nothing allows it) over one set of policies."""
    effects = {s["Effect"] for p in policies for s in _statements(p) if _applies(s, request)}
    if "Deny" in effects:
        return "deny"
    return "allow" if "Allow" in effects else "implicit"


def allowed(request: Request, identity: list[str | dict], boundary: str | dict | None = None) -> bool:
    """The identity policies allow it, nothing denies it, and the boundary (if any) allows it too."""
    if decide(request, identity) != "allow":
        return False
    return boundary is None or decide(request, [boundary]) == "allow"
