"""Where things are in the checkout, for every test module."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL_STACK = ROOT / "stacks" / "local.yaml"
STACKS = sorted(p.name.split(".")[1] for p in (ROOT / "stacks").glob("Pulumi.*.yaml"))
