"""Following MLflow's releases, offline: the version check against a stubbed PEP 691 index over real
HTTP, installability asked of pip itself against a local index of stand-in wheels (one release whose
own pin is not published yet, one that resolves), the pin bump, the pull request's body, and the
workflow and Dependabot files that run them."""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.version import Version
from typer.testing import CliRunner

from mlflow_platform import releases
from mlflow_platform.cli import app

from .json_stub import json_api
from .paths import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "mlflow-release.yml"


@pytest.fixture
def index(tmp_path: Path):
    """A PEP 691 simple index answering JSON for `mlflow` (final, pre- and dev releases)."""
    listing = {"name": "mlflow", "versions": ["3.16.1", "3.17.2", "3.18.0rc0", "3.19.0", "3.19.1.dev0", "oops"]}

    def answer(path: str, params: dict, headers: dict):
        wanted = path.rstrip("/") == "/simple/mlflow" and "json" in headers.get("Accept", "")
        return (listing if wanted else None), releases.SIMPLE_JSON

    with json_api(answer) as url:
        yield f"{url}/simple"


def _wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = (), *, extra: bool = True) -> None:
    """A minimal valid wheel: metadata only, enough for pip's resolver."""
    dist = f"{name.replace('-', '_')}-{version}"
    files = {
        f"{dist}.dist-info/METADATA": "Metadata-Version: 2.1\nName: {}\nVersion: {}\n{}{}".format(
            name, version, "Provides-Extra: auth\n" if extra else "", "".join(f"Requires-Dist: {r}\n" for r in requires)
        ),
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist}.dist-info/RECORD"] = "\n".join([*record, f"{dist}.dist-info/RECORD,,"]) + "\n"
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)


@pytest.fixture
def wheels(tmp_path: Path) -> tuple[str, ...]:
    """3.19.0 names a tracing release that is not published (as 3.18.0 did); 3.17.2 resolves."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    _wheel(folder, "mlflow", "3.19.0", ("mlflow-tracing==3.19.0",))
    _wheel(folder, "mlflow", "3.17.2", ("mlflow-tracing==3.17.2",))
    _wheel(folder, "mlflow-tracing", "3.17.2")
    return ("--no-index", "--find-links", str(folder))


def _checkout(tmp_path: Path, pin: str = "3.17.2") -> Path:
    root = tmp_path / "checkout"
    (root / "server").mkdir(parents=True)
    (root / "pyproject.toml").write_text(f'dependencies = [\n    "mlflow[auth]=={pin}",\n]\n')
    (root / "server" / "requirements.txt").write_text(f"mlflow[auth]=={pin}\ngunicorn==23.0.0\n")
    return root


def test_the_index_lists_final_releases_only(index: str) -> None:
    assert releases.published(index) == [Version("3.16.1"), Version("3.17.2"), Version("3.19.0")]


def test_an_unreachable_or_unknown_index_is_a_one_line_reason(index: str) -> None:
    with pytest.raises(releases.ReleaseError, match="answered 404"):
        releases.published(index, project="no-such-project")


def test_pip_decides_whether_a_release_installs(wheels) -> None:
    reason = releases.installable(Version("3.19.0"), wheels)
    assert reason and "mlflow-tracing==3.19.0" in reason
    assert releases.installable(Version("3.17.2"), wheels) is None


def test_a_newer_release_that_does_not_install_waits(tmp_path: Path, index: str, wheels) -> None:
    verdict = releases.check(_checkout(tmp_path), index, wheels)
    assert (verdict.current, verdict.newest) == (Version("3.17.2"), Version("3.19.0"))
    assert verdict.bump is False and "mlflow-tracing==3.19.0" in verdict.waiting
    assert verdict.outputs()["bump"] == "false" and verdict.outputs()["target"] == ""


def test_a_patch_release_that_installs_is_proposed_while_a_new_minor_waits(tmp_path: Path, index: str, wheels) -> None:
    """3.16.1 pinned: 3.19.0 waits for its tracing pin, 3.17.2 installs, so 3.17.2 is the bump."""
    verdict = releases.check(_checkout(tmp_path, "3.16.1"), index, wheels)
    assert (verdict.newest, verdict.target) == (Version("3.19.0"), Version("3.17.2"))
    assert verdict.bump and "mlflow-tracing==3.19.0" in verdict.waiting
    assert verdict.outputs()["target"] == "3.17.2"


def test_at_the_newest_release_there_is_nothing_to_do(tmp_path: Path, index: str, wheels) -> None:
    verdict = releases.check(_checkout(tmp_path, "3.19.0"), index, wheels)
    assert verdict.newest == verdict.current and not verdict.bump


def test_an_installable_release_is_bumped_in_every_pin_file(tmp_path: Path) -> None:
    root = _checkout(tmp_path)
    verdict = releases.Verdict(Version("3.17.2"), Version("3.19.0"), None, Version("3.19.0"))
    assert verdict.bump and verdict.outputs() == {
        "current": "3.17.2",
        "newest": "3.19.0",
        "target": "3.19.0",
        "bump": "true",
        "waiting": "",
    }
    assert releases.bump(root, Version("3.19.0")) == list(releases.PIN_FILES)
    assert releases.pinned(root) == Version("3.19.0")
    assert "gunicorn==23.0.0" in (root / "server" / "requirements.txt").read_text()  # nothing else moves


def test_pins_that_disagree_are_refused(tmp_path: Path) -> None:
    root = _checkout(tmp_path)
    (root / "server" / "requirements.txt").write_text("mlflow[auth]==3.16.1\n")
    with pytest.raises(releases.ReleaseError, match="pin different MLflow versions"):
        releases.pinned(root)


def test_the_repositorys_own_pins_agree() -> None:
    assert releases.pinned(ROOT) >= Version("3.17.2")


def test_the_pull_request_body_carries_the_drills_figures(tmp_path: Path) -> None:
    report = tmp_path / "drill.json"
    report.write_text(
        json.dumps(
            {
                "drills": [
                    {"from": "3.17.2", "data": "38 runs, 1,751 metric rows", "migrate_seconds": 9.94,
                     "until_serving_seconds": 31.42},
                ]
            }
        )
    )  # fmt: skip
    verdict = releases.Verdict(Version("3.17.2"), Version("3.19.0"), None, Version("3.19.0"))
    body = releases.pr_body(verdict, report, drill_passed=True)
    assert "Bumps MLflow from 3.17.2 to 3.19.0" in body and "releases/tag/v3.19.0" in body
    assert "| MLflow 3.17.2 | 38 runs, 1,751 metric rows | 9.9 s | 31.4 s |" in body
    assert "`pytest tests/test_upgrade_drill.py` passed" in body
    failed = releases.pr_body(verdict, tmp_path / "missing.json", drill_passed=False)
    assert "**failed**" in failed and "treat this bump as untested" in failed


def test_the_commands_say_it_in_one_line(tmp_path: Path, index: str, monkeypatch) -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["mlflow-release", "bump", "--to", "three"])
    assert bad.exit_code == 1 and "is not a version" in bad.output and "Traceback" not in bad.output
    dry = runner.invoke(app, ["mlflow-release", "bump", "--to", "9.9.9", "--dry-run"])
    assert dry.exit_code == 0 and "would pin MLflow 9.9.9" in dry.output
    assert releases.pinned(ROOT) != Version("9.9.9")  # the dry run changed nothing
    down = runner.invoke(app, ["mlflow-release", "check", "--index", "http://127.0.0.1:9/simple"])
    assert down.exit_code == 1 and "could not check MLflow's releases" in down.output


def test_the_workflow_bumps_only_an_installable_release_and_drills_from_the_old_pin() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    steps = workflow["jobs"]["follow"]["steps"]
    check = next(s for s in steps if s.get("id") == "check")
    assert "mlflow-release check --github-output" in check["run"]
    gated = [s for s in steps if s is not check and s.get("uses", "").split("@")[0] not in (
        "actions/checkout", "actions/setup-python") and s.get("run") != "make install"]  # fmt: skip
    assert gated and all(s["if"] == "steps.check.outputs.bump == 'true'" for s in gated)
    drill = next(s for s in steps if s.get("id") == "drill")
    assert drill["env"]["MLFLOW_PLATFORM_DRILL_FROM"] == "${{ steps.check.outputs.current }}"
    bump = next(s for s in steps if "mlflow-release bump" in s.get("run", ""))
    assert bump["env"]["TARGET"] == "${{ steps.check.outputs.target }}"  # the release that installs
    assert "tests/test_upgrade_drill.py" in drill["run"]
    pull = next(s for s in steps if s.get("uses", "").startswith("peter-evans/create-pull-request"))
    assert pull["with"]["body-path"].endswith("body.md")
    assert workflow["jobs"]["follow"]["permissions"] == {"contents": "write", "pull-requests": "write"}


def test_dependabot_watches_everything_but_mlflow_itself() -> None:
    config = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())
    watched = {(u["package-ecosystem"], u["directory"]) for u in config["updates"]}
    assert watched == {("pip", "/"), ("pip", "/server"), ("github-actions", "/"), ("docker", "/server")}
    for update in config["updates"]:
        if update["package-ecosystem"] == "pip":
            assert {"dependency-name": "mlflow"} in update["ignore"]  # the release workflow owns it


def test_a_release_without_the_auth_extra_or_a_file_without_the_pin_is_refused(tmp_path: Path) -> None:
    """pip only warns when the extra is gone (and exits 0): the server would lose its auth dependencies."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    _wheel(folder, "mlflow", "3.20.0", extra=False)
    reason = releases.installable(Version("3.20.0"), ("--no-index", "--find-links", str(folder)))
    assert reason and "[auth] extra" in reason
    root = _checkout(tmp_path)
    (root / "pyproject.toml").write_text("dependencies = []\n")
    with pytest.raises(releases.ReleaseError, match="pins no mlflow"):
        releases.pinned(root)
