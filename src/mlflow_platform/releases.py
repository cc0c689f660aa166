"""Following MLflow's releases: is there a newer one than the pin, can it be installed yet, and the
pull request that bumps the pin with the upgrade drill's result (.github/workflows/mlflow-release.yml).

"Installable" is asked of pip itself (``pip install --dry-run --report``) against the same index
the image and CI use: a release whose own pins are not all published yet (MLflow 3.18.0 named
``mlflow-tracing==3.18.0`` before it reached this index) is reported as waiting, not proposed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import requests
from packaging.version import InvalidVersion, Version

#: Where the pin lives; the bump rewrites each, and a test keeps them equal.
PIN_FILES = ("pyproject.toml", "server/requirements.txt")
PIN = re.compile(r"mlflow\[auth\]==(?P<version>[0-9][0-9a-z.]*)")
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"


class ReleaseError(Exception):
    """A one-line reason the check could not be made."""


def pinned(root: Path) -> Version:
    found = {name: PIN.search((root / name).read_text()) for name in PIN_FILES}
    if missing := [name for name, match in found.items() if match is None]:
        raise ReleaseError(f"{', '.join(missing)} pins no mlflow[auth]==X: the bump rewrites that pin")
    versions = {match.group("version") for match in found.values()}
    if len(versions) != 1:
        raise ReleaseError(f"{' and '.join(PIN_FILES)} pin different MLflow versions: {sorted(versions)}")
    return Version(versions.pop())


def published(index: str, project: str = "mlflow") -> list[Version]:
    """Final releases of ``project`` on a PEP 691 (JSON simple API) index, oldest first."""
    answer = requests.get(f"{index.rstrip('/')}/{project}/", headers={"Accept": SIMPLE_JSON}, timeout=30)
    if answer.status_code != 200:
        raise ReleaseError(f"{index} answered {answer.status_code} for {project}")
    found = []
    for text in answer.json().get("versions", []):
        try:
            version = Version(text)
        except InvalidVersion:
            continue
        if not version.is_prerelease and not version.is_devrelease:
            found.append(version)
    return sorted(found)


def installable(version: Version, pip_args: tuple[str, ...] = ()) -> str | None:
    """None when pip resolves ``mlflow[auth]==version`` with every dependency; else pip's reason."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", "-", "--ignore-installed",
         *pip_args, f"mlflow[auth]=={version}"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if result.returncode == 0:
        # pip only warns when a release dropped the extra: the server would lose its auth dependencies
        return "it no longer provides the [auth] extra" if "does not provide the extra" in result.stderr else None
    reasons = [line for line in result.stderr.splitlines() if "No matching distribution" in line]
    return (reasons or result.stderr.strip().splitlines() or ["pip failed"])[-1].removeprefix("ERROR: ")


@dataclass(frozen=True)
class Verdict:
    current: Version
    newest: Version
    #: why the newest cannot be installed yet (None: it can, or it is the pin)
    waiting: str | None
    #: the newest release above the pin that installs (a patch release while a minor waits); None: none
    target: Version | None = None

    @property
    def bump(self) -> bool:
        return self.target is not None and self.target > self.current

    def outputs(self) -> dict[str, str]:
        """For $GITHUB_OUTPUT."""
        return {
            "current": str(self.current),
            "newest": str(self.newest),
            "target": str(self.target or ""),
            "bump": "true" if self.bump else "false",
            "waiting": self.waiting or "",
        }


#: Releases above the pin asked of pip, newest first (each is one resolver run).
CANDIDATES = 5


def check(root: Path, index: str, pip_args: tuple[str, ...] | None = None) -> Verdict:
    """The newest release, why it waits if it does not install, and the newest one above the pin
    that does: a 3.17.3 is proposed while a 3.18.0 still waits for its own pins. pip resolves
    against the same index the versions came from, unless ``pip_args`` says otherwise."""
    pip_args = ("--index-url", index) if pip_args is None else pip_args
    current = pinned(root)
    newer = sorted((v for v in published(index) if v > current), reverse=True)[:CANDIDATES]
    if not newer:
        return Verdict(current, current, None)
    waiting = None
    for candidate in newer:
        reason = installable(candidate, pip_args)
        if reason is None:
            return Verdict(current, newer[0], waiting, candidate)
        waiting = waiting or reason
    return Verdict(current, newer[0], waiting)


def bump(root: Path, to: Version) -> list[str]:
    """Rewrite the pin in every file that holds it; returns the files changed."""
    changed = []
    for name in PIN_FILES:
        path = root / name
        text = path.read_text()
        new = PIN.sub(f"mlflow[auth]=={to}", text)
        if new != text:
            path.write_text(new)
            changed.append(name)
    return changed


def pr_body(verdict: Verdict, drill_report: Path | None, drill_passed: bool) -> str:
    """The pull request's description: what moves, and what the upgrade drill measured."""
    lines = [
        f"Bumps MLflow from {verdict.current} to {verdict.target} "
        f"([release notes](https://github.com/mlflow/mlflow/releases/tag/v{verdict.target})).",
        "",
        f"Files: {', '.join(f'`{n}`' for n in PIN_FILES)}. Review the route table, the pinned UI strings and "
        'the auth surface before merging (docs/upgrades.md, "Following MLflow releases").',
        "",
        "## Upgrade drill",
        "",
        f"`pytest tests/test_upgrade_drill.py` {'passed' if drill_passed else '**failed**: do not merge as is'}.",
        "",
    ]
    rows = json.loads(drill_report.read_text())["drills"] if drill_report and drill_report.exists() else []
    if not rows:
        return "\n".join([*lines, "The drill wrote no measurements: treat this bump as untested."]) + "\n"
    lines += ["| from | data | migrated and verified | until the new server answered |", "|---|---|---|---|"]
    lines += [
        f"| MLflow {r['from']} | {r['data']} | {r['migrate_seconds']:.1f} s | {r['until_serving_seconds']:.1f} s |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"
