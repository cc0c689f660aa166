"""The code's shape, checked: linted and formatted by ruff, and no function longer than 60 lines."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from .paths import ROOT

RUFF = Path(sys.executable).parent / "ruff"
MAX_FUNCTION_LINES = 60


def test_ruff_lint_passes() -> None:
    result = subprocess.run(
        [str(RUFF), "check", "--output-format", "concise", "."], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_leaves_nothing_to_change() -> None:
    result = subprocess.run([str(RUFF), "format", "--check", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def long_functions(folders: tuple[str, ...]) -> list[str]:
    found = []
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = node.end_lineno - node.lineno + 1
                    if length > MAX_FUNCTION_LINES:
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    return found


#: Functions already over the limit when the limit came in, with their length then. The list may
#: only shrink: a new long function, or one of these growing, fails. (Issue 12, point 3: split the
#: components' constructors into typed args and private builders.)
KNOWN_LONG = {
    "src/mlflow_platform/cli/stack.py plan_command": 62,
    "src/mlflow_platform/config.py cross_field_problems": 69,
    "src/mlflow_platform/infra/components/artifact_store.py __init__": 137,
    "src/mlflow_platform/infra/components/cluster.py _create": 107,
    "src/mlflow_platform/infra/components/database.py __init__": 129,
    "src/mlflow_platform/infra/components/iam.py __init__": 124,
    "src/mlflow_platform/infra/components/load_balancer.py __init__": 136,
    "src/mlflow_platform/infra/components/monitoring.py __init__": 133,
    "src/mlflow_platform/infra/components/network.py _create": 72,
    "src/mlflow_platform/infra/components/scheduled_runbooks.py __init__": 175,
    "src/mlflow_platform/infra/components/tracking_server.py __init__": 289,
    "src/mlflow_platform/infra/components/tracking_server.py deployment": 66,
    "src/mlflow_platform/infra/program.py main": 119,
}


def test_no_function_in_the_product_grows_past_60_lines() -> None:
    grown = []
    for entry in long_functions(("src", "infra", "policies")):
        where, length = entry.split(" (")[0], int(entry.split(" (")[1].split()[0])
        key = f"{where.split(':')[0]} {where.split(' ')[1]}"
        if length > KNOWN_LONG.get(key, MAX_FUNCTION_LINES):
            grown.append(entry)
    assert grown == [], "split these functions (at most 60 lines each)"
