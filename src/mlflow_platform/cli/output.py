"""What every command prints through: one console each for stdout and stderr, and one way to fail."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

# emoji=False: rich would otherwise turn ":secret:" inside an ARN into an emoji.
out = Console(emoji=False)
err = Console(stderr=True, emoji=False)


def fail(message: str) -> typer.Exit:
    """Print ``error: <message>`` (markup escaped, never wrapped) and return the exit to raise."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


def print_actions(title: str, actions: list[str], dry_run: bool) -> None:
    prefix = "[yellow]would[/] " if dry_run else ""
    out.print(f"[bold]{escape(title)}[/]")
    for action in actions:
        out.print(f"  {prefix}{escape(action)}", highlight=False)
