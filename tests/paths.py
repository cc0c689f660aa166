"""Where things are in the checkout, and each stack's offline plan (computed once per session)."""

from functools import cache
from pathlib import Path

import yaml

from mlflow_platform import plan

ROOT = Path(__file__).resolve().parent.parent
LOCAL_STACK = ROOT / "stacks" / "local.yaml"
STACKS = sorted(p.name.split(".")[1] for p in (ROOT / "stacks").glob("Pulumi.*.yaml"))


#: What `pulumi config set --secret mlflow-platform:ssoClientSecret` adds to a stack file with `sso`
#: (the committed examples cannot carry a ciphertext only the operator's stack can decrypt).
SSO_SECRET = {"mlflow-platform:ssoClientSecret": {"secure": "v1:placeholder"}}


def overrides_for(stack: str) -> dict:
    document = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())
    return SSO_SECRET if "mlflow-platform:sso" in document["config"] else {}


@cache
def captured(stack: str) -> plan.Capture:
    """The stack's plan under mocks, shared by the program and policy tests (read-only: copy to edit)."""
    return plan.run(ROOT / "stacks" / f"Pulumi.{stack}.yaml", project_root=ROOT, overrides=overrides_for(stack))
