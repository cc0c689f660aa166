"""Example values left in a stack file: lines marked ``# CHANGE ME`` (hostnames, VPC and subnet
ids, the certificate, the GitHub repository). The offline checks pass on them, so they are
named out loud: `config check` and `plan` warn while any remain."""

from __future__ import annotations

from pathlib import Path

MARKER = "# CHANGE ME"


def placeholders(stack_file: Path) -> list[str]:
    """Stack keys (``loadBalancer.hostname``) whose line still carries the marker."""
    found, section = [], None
    for line in stack_file.read_text().splitlines():
        code = line.split("#", 1)[0].rstrip()
        if not code.strip() or ":" not in code:
            continue
        indent, key = len(code) - len(code.lstrip()), code.strip().split(":", 1)[0]
        if code.strip().startswith("mlflow-platform:") and indent <= 2:
            section = code.strip().split(":")[1]
            key = section
        if indent <= 2 and not code.strip().startswith("mlflow-platform:"):
            key = code.strip().split(": ", 1)[0].rstrip(":")  # a provider's key: aws:allowedAccountIds
        if MARKER in line:
            found.append(key if indent <= 2 else f"{section}.{key}")
    return found


def warning(stack_file: Path) -> str | None:
    keys = placeholders(stack_file)
    if not keys:
        return None
    return (
        f"{stack_file.name} still holds example values (marked {MARKER}): {', '.join(keys)}; "
        "replace them with yours before `pulumi up`"
    )


def secrets_warning(stack_file: Path, missing: list[str]) -> str | None:
    if not missing:
        return None
    sets = "; ".join(f"`pulumi config set --secret mlflow-platform:{key} <value>`" for key in missing)
    return f"{stack_file.name} sets no {', '.join(missing)}: the plan used a stand-in; {sets} before `pulumi up`"
