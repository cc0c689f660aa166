"""Every command's help reads well: plain value names (no Python types), no stray " .", and every
option with a default shows it."""

from __future__ import annotations

import re

import pytest
import typer.testing
from typer.testing import CliRunner

from mlflow_platform.cli import app, command

TYPE_LABELS = re.compile(r"<(bool|str|float|int|path|list\[[^\]]*\])>", re.IGNORECASE)


def _commands(cmd, path=()):
    yield path, cmd
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(command()))


def _help(path: tuple[str, ...]) -> str:
    """Through the command the entry point runs (typer's runner would build its own from ``app``)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(typer.testing, "_get_command", lambda _app: command())
        result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "100", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.output


def _flat(text: str) -> str:
    """Help without its box drawing and line breaks, so wrapped cells read as one line."""
    return re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", text))


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "mlflow-platform")
def test_help_reads_well(path: tuple[str, ...]) -> None:
    text = _help(path)
    assert not TYPE_LABELS.search(text), TYPE_LABELS.search(text).group(0)
    flat = _flat(text)
    panels = _flat(text[text.find("╭─") :])  # the option tables, not the examples above them
    assert " ." not in flat.replace(" ...", ""), flat[max(0, flat.find(" .") - 60) : flat.find(" .") + 10]
    cmd = dict(COMMANDS)[path]
    for param in cmd.params:
        shown_default = param.default not in (None, False, (), []) and not getattr(param, "is_flag", False)
        if not shown_default or param.param_type_name != "option" or param.hidden:
            continue
        name = max(param.opts, key=len)
        after = panels[panels.find(f" {name} ") :]
        following = re.search(r" --[a-z]", after[len(name) + 2 :])
        cell = after[: len(name) + 2 + following.start()] if following else after
        assert "[default:" in cell, f"{' '.join(path)} {name} does not show its default ({param.default!r})"


@pytest.mark.parametrize("path", [p for p, c in COMMANDS if "Example" in (c.help or "")], ids=" ".join)
def test_examples_are_not_wrapped_at_80_columns(path: tuple[str, ...]) -> None:
    """Each example line of the docstring appears whole in the help an 80-column terminal shows."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(typer.testing, "_get_command", lambda _app: command())
        rendered = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80", "NO_COLOR": "1"}).output
    shown = [line.strip() for line in rendered.splitlines()]
    example = dict(COMMANDS)[path].help.split("Example", 1)[1].splitlines()[1:]
    for line in (raw.strip() for raw in example):
        if line:
            assert line in shown, f"wrapped: {line!r}"
