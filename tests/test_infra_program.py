"""The Pulumi program under Pulumi's own mocks, once per stack file (no CLI, no cloud)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pulumi
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "infra"))
STACKS = sorted(p.name.split(".")[1] for p in (ROOT / "stacks").glob("Pulumi.*.yaml"))


class Mocks(pulumi.runtime.Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        return [f"{args.name}-id", args.inputs]

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


def run_program(stack: str, overrides: dict | None = None) -> dict:
    """Run infra/program.py:main() for a stack file, with ``preview=False`` so applies run."""
    import program

    document = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())
    config = {**document["config"], **(overrides or {})}
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    pulumi.runtime.settings.ROOT.set(None)
    pulumi.runtime.set_all_config(
        {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}, secret_keys=[]
    )
    pulumi.runtime.set_mocks(Mocks(), project="mlflow-platform", stack=stack, preview=False)
    result: dict = {}

    @pulumi.runtime.test  # waits for every outstanding registration before returning
    def run() -> None:
        result.update(program.main())

    try:
        run()
    finally:
        loop.close()
    return result


@pytest.mark.parametrize("stack", STACKS)
def test_program_runs_for_every_stack(stack: str) -> None:
    exports = run_program(stack)
    assert exports["environment"] == stack
    assert exports["connectionBudget"] <= exports["maxConnections"]
    assert exports["serverCommand"][:2] == ["mlflow", "server"]


def test_bad_stack_value_fails_the_program_with_the_key_named() -> None:
    with pytest.raises(pulumi.RunError, match="server.keepAliveSeconds"):
        run_program("prod", {"mlflow-platform:server": {"replicas": 3, "keepAliveSeconds": 30}})
