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


def test_no_function_in_the_product_is_longer_than_60_lines() -> None:
    assert long_functions(("src", "infra", "policies")) == [], "split these functions (at most 60 lines each)"
