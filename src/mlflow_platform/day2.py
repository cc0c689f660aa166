"""What a routine change does to a stack that already exists: the plan before and after, under the
same mocks, compared resource by resource. A resource is replaced when a changed input is one its
provider cannot update in place (the replace-forcing properties vendored from the providers' own
schemas, infra/vendor/replace-forcing-properties.json), when a ``replaceOnChanges`` path changed,
or when it is renamed; a replacement reaches every input fed by the replaced resource's outputs.

``tests/test_day2.py`` fails when a change would replace or delete state, and docs/deploying.md's
day-2 table is generated from :data:`CHANGES` (``python -m mlflow_platform.docs --write``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic.alias_generators import to_camel

from .plan import Capture, Resource

VENDOR = Path(__file__).parent / "infra" / "vendor" / "replace-forcing-properties.json"

#: What must never be replaced or deleted by a routine change: it holds data or identity.
STATEFUL = {
    "aws:rds/instance:Instance",
    "aws:s3/bucket:Bucket",
    "aws:kms/key:Key",
    "aws:secretsmanager/secret:Secret",
    "aws:iam/openIdConnectProvider:OpenIdConnectProvider",
    "aws:dynamodb/table:Table",
    "aws:ecr/repository:Repository",
}


def replace_forcing() -> dict[str, set[str]]:
    """Pulumi type -> camelCase input paths (``vpcConfig.subnetIds``) whose change replaces it."""
    vendored = json.loads(VENDOR.read_text())["resources"]
    return {
        token: {".".join(to_camel(part) for part in name.split(".")) for name in entry["force_new"]}
        for token, entry in vendored.items()
    }


@dataclass
class Outcome:
    """Per logical resource name: create, delete, replace or update (unchanged ones are left out)."""

    actions: dict[str, str] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)

    def named(self, action: str) -> list[str]:
        return sorted(name for name, a in self.actions.items() if a == action)

    def harmful(self) -> list[str]:
        """State a routine change must never lose."""
        return [
            f"{self.types[name]} {name} would be {action}d"
            for name, action in sorted(self.actions.items())
            if action in ("replace", "delete") and self.types[name] in STATEFUL
        ]


def _differs(before: Any, after: Any) -> bool:
    return json.dumps(before, sort_keys=True, default=str) != json.dumps(after, sort_keys=True, default=str)


def _path_changed(path: str, before: dict, after: dict) -> bool:
    """A ``replaceOnChanges`` path such as ``spec.targetGroupARN``."""
    for part in path.split("."):
        before = before.get(part) if isinstance(before, dict) else None
        after = after.get(part) if isinstance(after, dict) else None
    return _differs(before, after)


def _name(resource: Resource) -> str | None:
    return (resource.inputs.get("metadata") or {}).get("name") or resource.inputs.get("name")


def _renamed(before: Resource, after: Resource) -> bool:
    return _name(before) is not None and _name(before) != _name(after)


def compare(base: Capture, changed: Capture) -> Outcome:
    forcing = replace_forcing()
    old = {r.name: r for r in base.resources if not r.type.startswith(("mlflow-platform:", "pulumi:"))}
    new = {r.name: r for r in changed.resources if not r.type.startswith(("mlflow-platform:", "pulumi:"))}
    outcome = Outcome(types={n: r.type for n, r in {**old, **new}.items()})
    for name in new.keys() - old.keys():
        outcome.actions[name] = "create"
    for name in old.keys() - new.keys():
        outcome.actions[name] = "delete"
    keys = {name: _changed_keys(old[name], new[name]) for name in old.keys() & new.keys()}
    replaced = _replacements(old, new, keys, forcing)
    urns = {old[name].urn for name in replaced}
    for name, changed_keys in keys.items():
        fed = any(u in urns for deps in new[name].property_dependencies.values() for u in deps)
        if name in replaced:
            outcome.actions[name] = "replace"
        elif changed_keys or fed:  # fed a replaced resource's new id or ARN
            outcome.actions[name] = "update"
    return outcome


def _changed_keys(before: Resource, after: Resource) -> set[str]:
    inputs = set(before.inputs) | set(after.inputs)
    return {k for k in inputs if k != "__defaults" and _differs(before.inputs.get(k), after.inputs.get(k))}


def _replacements(old, new, keys: dict[str, set[str]], forcing) -> set[str]:
    """Replaced resources, to a fixpoint: a replaced resource's outputs are new values downstream."""
    replaced: set[str] = set()
    urn_of = {r.urn: name for name, r in old.items()}
    while True:
        found = set()
        for name in keys:
            after = new[name]
            fed = {k for k, urns in after.property_dependencies.items() if any(urn_of.get(u) in replaced for u in urns)}
            if _forced(old[name], after, fed, forcing):
                found.add(name)
        if found <= replaced:
            return replaced
        replaced |= found


def _forced(before: Resource, after: Resource, fed: set[str], forcing) -> bool:
    """A replace-forcing input changed or was fed a replaced resource's new output, a
    ``replaceOnChanges`` path changed, or the resource was renamed."""
    paths = forcing.get(after.type, set())
    if any(p.split(".")[0] in fed or _path_changed(p, before.inputs, after.inputs) for p in paths):
        return True
    chosen = after.options.get("replaceOnChanges", [])
    if any(p.split(".")[0] in fed or _path_changed(p, before.inputs, after.inputs) for p in chosen):
        return True
    return _renamed(before, after)


@dataclass(frozen=True)
class Change:
    """A routine change: the stack it is shown on, and the config it sets."""

    name: str
    stack: str
    overrides: Callable[[dict[str, Any]], dict[str, Any]]
    #: how long it takes in AWS and what the service does meanwhile (from the services' docs)
    duration: str
    #: a new build context: the image tag (a hash of it) changes
    rebuild: bool = False


def _section(config: dict[str, Any], section: str, **values: Any) -> dict[str, Any]:
    return {f"mlflow-platform:{section}": {**(config.get(f"mlflow-platform:{section}") or {}), **values}}


CHANGES: tuple[Change, ...] = (
    Change("image or MLflow bump", "prod", lambda c: {}, "a rolling update behind the migration Job; "
           "the Job scales the server to zero only when the schema changes (decision 0004)", rebuild=True),
    Change("instance class", "prod", lambda c: _section(c, "database", instanceClass="db.r6g.xlarge"),
           "RDS applies it in the maintenance window (or at once with database.applyImmediately); "
           "Multi-AZ fails over, about a minute of refused connections"),
    Change("storage", "prod", lambda c: _section(c, "database", allocatedStorageGb=200),
           "online; RDS allows the next storage change after six hours"),
    Change("replicas and workers", "prod", lambda c: _section(c, "server", replicas=4, workers=8),
           "a rolling update; the connection budget is checked first"),
    Change("server.port", "prod", lambda c: _section(c, "server", port=8080),
           "a new target group and binding; the ALB shifts traffic once the new targets are healthy"),
    Change("adding a team", "prod", lambda c: {"mlflow-platform:teams": [{"name": "search", "members": ["ana"]}]},
           "the teams Job creates the workspace, users and grants after the rollout"),
    Change("turning on sso", "prod", lambda c: _sso_from("staging"),
           "the listener's default action gains authenticate-oidc; sessions start at the next request"),
    Change("engine major", "prod", lambda c: _section(c, "database", engineVersion="18", applyImmediately=True),
           "RDS snapshots, then upgrades in place: the database is down for the upgrade, tens of minutes"),
    Change("EKS minor", "dev", lambda c: _section(c, "cluster", version="1.36"),
           "the control plane upgrades in place (no API downtime), then the node group rolls one node at a time"),
    Change("rotating the admin password", "prod", lambda c: {"mlflow-platform:adminPassword": {"secure": "v1:new"}},
           "the secret and the server's Secret update in seconds; running pods keep the old password "
           "until `kubectl rollout restart deployment/mlflow` (the Deployment itself does not change)"),
)  # fmt: skip


def _sso_from(stack: str) -> dict[str, Any]:
    import yaml

    from .files import find_project_root

    document = yaml.safe_load((find_project_root() / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
    return {
        "mlflow-platform:sso": document["mlflow-platform:sso"],
        "mlflow-platform:ssoClientSecret": {"secure": "v1:placeholder"},
    }


def plan_of(change: Change, root: Path) -> Capture:
    """The stack's plan with the change applied (secrets the examples lack stood in, as `plan` does)."""
    import contextlib
    from unittest import mock

    import yaml

    from . import plan
    from .infra.components import image

    path = root / "stacks" / f"Pulumi.{change.stack}.yaml"
    config = yaml.safe_load(path.read_text())["config"]
    rebuilt = mock.patch.object(image, "content_tag", lambda _: "0123456789abcdef")
    with rebuilt if change.rebuild else contextlib.nullcontext():
        return plan.run(path, project_root=root, overrides=change.overrides(config))


def catalogue_markdown(root: Path) -> str:
    """docs/deploying.md's day-2 table: each change against its stack's plan as shipped."""
    from . import plan

    rows = ["| change (stack) | replaced | updated in place | created | how long, and what happens meanwhile |",
            "|---|---|---|---|---|"]  # fmt: skip
    for change in CHANGES:
        base = plan.run(root / "stacks" / f"Pulumi.{change.stack}.yaml", project_root=root)
        outcome = compare(base, plan_of(change, root))
        cells = [_names(outcome.named(a)) for a in ("replace", "update", "create")]
        rows.append(f"| {change.name} ({change.stack}) | {' | '.join(cells)} | {change.duration} |")
    return "\n".join(rows) + "\n"


def _names(names: list[str], limit: int = 8) -> str:
    if not names:
        return "—"
    shown = ", ".join(f"`{n}`" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
