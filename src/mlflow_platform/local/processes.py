"""Starting, watching and stopping the local platform's background processes.

Each component runs in its own session (process group), so stopping it also stops the workers
it forked (gunicorn workers, the MLflow job runner) and nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import psutil

from ..errors import PlatformError


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port() -> int:
    """A port the OS says is free now (for tests and throwaway platforms)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port_run(count: int, *, start: int = 20000, stop: int = 40000) -> int:
    """The first of ``count`` consecutive free ports, chosen at random in [start, stop)."""
    import random

    for _ in range(200):
        first = random.randrange(start, stop - count)
        if not any(port_in_use(p) for p in range(first, first + count)):
            return first
    raise PlatformError(f"no {count} consecutive free ports found between {start} and {stop}")


def port_owner(port: int) -> str:
    """Who listens on a port, for error messages: the owning platform when it is one of ours
    ("the mlflow-platform in /x/state (leader pid 12)"), else "pid 123 (postgres)"."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                return describe_process(conn.pid)
    except psutil.Error:
        pass
    return "another process"


def describe_process(pid: int) -> str:
    try:
        proc = psutil.Process(pid)
        name, leader = proc.name(), os.getpgid(pid)
        state_dir = _platform_state_dir([*proc.cmdline(), proc.cwd()])
    except (psutil.Error, OSError):
        return f"pid {pid}"
    if state_dir is not None:
        return (
            f"the mlflow-platform in {state_dir} (leader pid {leader}; stop it with "
            f"`mlflow-platform local down --state-dir {state_dir}`)"
        )
    return f"pid {pid} ({name})"


def _platform_state_dir(hints: list[str]) -> Path | None:
    """The state dir (it holds state.json) that a process's arguments or working directory lie in."""
    for hint in hints:
        for part in hint.split("="):
            if not part.startswith("/"):
                continue
            for candidate in (Path(part), *Path(part).parents):
                if os.path.isfile(candidate / "state.json") and os.path.exists(candidate / "secrets.json"):
                    return candidate
    return None


def require_free_port(port: int, what: str, option: str) -> None:
    if port_in_use(port):
        raise PlatformError(
            f"port {port} for {what} is already in use by {port_owner(port)}; "
            f"stop that process or choose another port with {option}"
        )


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def spawn(argv: Sequence[str], *, env: Mapping[str, str], log: Path, cwd: Path | None = None) -> int:
    """Start a detached process in its own session; output goes to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with os.fdopen(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as out:
        try:
            proc = subprocess.Popen(
                list(argv),
                env=dict(env),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                start_new_session=True,
                umask=0o077,  # what servers create in the state dir is private, whatever the caller's umask
            )
        except FileNotFoundError:
            raise PlatformError(
                f"cannot start {argv[0]!r}: not found; run `make install` (or "
                "`pip install -e .`) so the pinned tools are in the virtualenv"
            ) from None
    return proc.pid


def owned(pid: int | None, marker: Path) -> bool:
    """Is ``pid`` alive and ours? Ours: its command line or working directory mentions ``marker``
    (the state dir). Guards against a pid recorded before a reboot that now names a stranger."""
    if not alive(pid):
        return False
    return _mentions(psutil.Process(pid), str(marker))


def _mentions(proc: psutil.Process, marker: str) -> bool:
    try:
        return any(marker in part for part in proc.cmdline()) or proc.cwd().startswith(marker)
    except psutil.Error:
        return False


def stop_group(pid: int | None, marker: Path, *, timeout: float = 15.0) -> None:
    """SIGTERM our processes in the group led by ``pid``; SIGKILL what is left after ``timeout``.

    The group outlives its leader (a SIGKILLed ``mlflow server`` leaves its gunicorn), so members
    are found by process group, not by parentage; only those that are ours are signalled.
    """
    if not pid:
        return
    members = [p for p in group_members(pid) if _mentions(p, str(marker))]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in members:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)
        _, members = psutil.wait_procs(members, timeout=timeout if sig == signal.SIGTERM else 5)
        # A process that exited but whose parent (another process, e.g. the one that ran `up`) has
        # not reaped it yet is a zombie: it holds no port and no file, so it counts as stopped.
        members = [p for p in members if not _zombie(p)]
        if not members:
            return
    survivors = [p.pid for p in members if p.is_running()]
    if survivors:
        raise PlatformError(f"processes {survivors} did not stop; kill them by hand")


def _zombie(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True  # gone


def group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                members.append(proc)
        except (ProcessLookupError, psutil.Error, OSError):
            continue
    return members


def wait_until(
    check: Callable[[], bool], *, timeout: float, interval: float = 0.2, abort: Callable[[], str | None] | None = None
) -> bool:
    """Poll ``check`` until true; ``abort`` may return a reason to give up early (process died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        if abort is not None and (reason := abort()):
            raise PlatformError(reason)
        time.sleep(interval)
    return check()


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
