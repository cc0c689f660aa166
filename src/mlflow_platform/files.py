"""Private files, where the state dir is, and its lock: shared by the local platform, the
runbooks (the local promotion lock) and the team passwords, so none of them reaches into another.

The state dir holds every secret and every artifact body, so it is private whatever the umask:
directories 0700, files 0600 (created that way, never chmod-ed after the fact).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import PlatformError

STATE_DIR_ENV = "MLFLOW_PLATFORM_STATE_DIR"


def find_project_root(start: Path | None = None) -> Path:
    """The checkout this command runs in: the nearest directory holding Pulumi.yaml."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "Pulumi.yaml").exists() and (candidate / "stacks").is_dir():
            return candidate
    raise PlatformError(
        f"no mlflow-platform checkout found at or above {here}; run this from the "
        "repository, or pass --stack / --stack-file"
    )


def default_state_dir() -> Path:
    """``$MLFLOW_PLATFORM_STATE_DIR``, else ``<checkout>/.mlflow-platform``, else the XDG state dir."""
    if os.environ.get(STATE_DIR_ENV):
        return Path(os.environ[STATE_DIR_ENV])
    try:
        return find_project_root() / ".mlflow-platform"
    except PlatformError:
        base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
        return Path(base) / "mlflow-platform"


def private_dir(path: Path) -> Path:
    """Create ``path`` 0700, or take away what others and the group may do with it. Group
    traverse survives: run as root, the state dir lets PostgreSQL's own user through (0710)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(path.stat().st_mode & 0o710 | 0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Atomically replace ``path`` with ``text``, mode 0600 from the first byte."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def read_json(path: Path, what: str) -> dict:
    """A JSON object from ``path``, or a one-line error naming the file."""
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PlatformError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); {what}") from None
    if not isinstance(value, dict):
        raise PlatformError(f"{path} does not hold a JSON object; {what}")
    return value


@contextlib.contextmanager
def flock(path: Path, *, timeout: float, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created 0600), waiting up to ``timeout`` seconds, else
    TimeoutError. The kernel releases it when the holder exits, even by SIGKILL, so a crashed
    holder never leaves it locked."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline, waited = time.monotonic() + timeout, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if on_wait and not waited:
                    on_wait()
                waited = True
                if time.monotonic() >= deadline:
                    raise TimeoutError(path) from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)  # closing releases the flock


@contextlib.contextmanager
def exclusive_lock(
    state_dir: Path, *, on_wait: Callable[[str], None] | None = None, timeout: float = 300.0
) -> Iterator[None]:
    """Hold ``<state>/.lock`` for an up or down, so two of them never interleave."""
    private_dir(state_dir)
    notice = f"waiting for another mlflow-platform command on {state_dir} to finish"
    try:
        with flock(state_dir / ".lock", timeout=timeout, on_wait=(lambda: on_wait(notice)) if on_wait else None):
            yield
    except TimeoutError:
        raise PlatformError(
            f"another mlflow-platform command has held {state_dir}/.lock for {timeout:.0f}s; "
            "wait for it, or stop it, then run this again"
        ) from None
