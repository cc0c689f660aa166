"""Where things are in the checkout, and each stack's offline plan (computed once per session)."""

from functools import cache
from pathlib import Path

from mlflow_platform import plan

ROOT = Path(__file__).resolve().parent.parent
LOCAL_STACK = ROOT / "stacks" / "local.yaml"
STACKS = sorted(p.name.split(".")[1] for p in (ROOT / "stacks").glob("Pulumi.*.yaml"))


@cache
def captured(stack: str) -> plan.Capture:
    """The stack's plan under mocks, shared by the program and policy tests (read-only: copy to edit)."""
    return plan.run(ROOT / "stacks" / f"Pulumi.{stack}.yaml", project_root=ROOT)
