"""The README's promise: `eval "$(mlflow-platform local env)" && pytest smoke_tests` passes."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from .paths import ROOT


def run_smoke_suite(
    target: dict[str, str], tmp_path, *, timeout: float, tests: str = "smoke_tests"
) -> subprocess.CompletedProcess[str]:
    """`pytest smoke_tests` as a user runs it, with only the target's MLFLOW_* variables set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    command = [sys.executable, "-m", "pytest", tests, "-q", "-p", "no:cacheprovider", "-rs"]
    return subprocess.run(
        [*command, "--basetemp", str(tmp_path / "smoke")],
        cwd=ROOT,
        env={**env, **target},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_smoke_suite_passes_against_the_local_platform(platform, tmp_path) -> None:
    result = run_smoke_suite(platform.client_env(), tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary), summary
    assert "skipped" not in summary and "failed" not in summary, summary  # the S3 layout check ran too


def test_smoke_suite_refuses_to_run_without_a_target() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "smoke_tests", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 4
    assert "--tracking-uri" in result.stdout + result.stderr


def test_smoke_suite_against_a_dead_uri_fails_fast_in_one_line(tmp_path) -> None:
    from mlflow_platform.local.processes import free_port

    target = {
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": "x" * 12,
    }
    result = run_smoke_suite(target, tmp_path, timeout=120)
    assert result.returncode == 4
    assert "cannot reach http://127.0.0.1:" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
