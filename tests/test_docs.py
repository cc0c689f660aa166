"""The README stays true: its configuration reference is the model's, and its commands exist."""

from __future__ import annotations

from pathlib import Path

from mlflow_platform.docs import config_reference_markdown

from .paths import ROOT


def test_readme_configuration_reference_matches_the_model() -> None:
    assert config_reference_markdown() in (ROOT / "README.md").read_text(), (
        "README's configuration reference is stale: paste `python -m mlflow_platform.docs` output"
    )


def test_readme_commands_are_make_targets() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in ("local:", "test:"):
        assert target in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()
