"""The project's own exceptions, in one module every layer may import (the local platform, the
database code, the runbooks and the command line), so none of them imports another for its errors.

Each carries a message meant for a person: what happened, and what to do about it. The command
line prints it as one line, never a traceback.
"""

from __future__ import annotations


class PlatformError(RuntimeError):
    """A local-platform failure, with a message that says what to do about it."""


class RunbookError(RuntimeError):
    """A runbook (including a backup, a restore or the restore drill) refused or failed; the message
    says what happened and what was left unchanged."""


class UpgradeError(RuntimeError):
    """A schema-upgrade step failed or was refused; the message says what to do next."""


def first_line(exc: BaseException) -> str:
    """An exception's message as one line for a person (a database error's first line: the rest is
    its SQL and hints), or its type's name when it has none."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
