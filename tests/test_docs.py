"""The README stays true: its configuration reference is the model's, and its commands exist."""

from __future__ import annotations

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


def test_nothing_reaches_into_the_checkout_through_sys_path() -> None:
    """The Pulumi program and the policy rules are in the package; entry points import them normally."""
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in ("src", "infra", "policies")
        for path in (ROOT / folder).rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "sys.path" in line
    ]
    assert offenders == []
