"""The local platform: embedded PostgreSQL, a local S3 API and the tracking server, as one unit.

The tracking server runs exactly what ``render_server`` renders for the ``local`` stack; only
the endpoints differ from AWS (loopback PostgreSQL instead of RDS, the local S3 API instead of
S3, static keys for it instead of IRSA). Everything lives under one state directory, so
``down`` keeps the data and ``down --purge`` removes it.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import boto3
import botocore.config
import requests

from ..config import StackConfig, load_stack_file
from ..server_spec import (
    ADMIN_PASSWORD,
    DB_PASSWORD,
    FLASK_SECRET_KEY,
    Endpoints,
    ServerSpec,
    render_server,
)
from .postgres import LocalPostgres
from .processes import PlatformError, owned, require_free_port, spawn, stop_group, tail, wait_until

DEFAULT_PORTS = {"tracking": 5000, "postgres": 5433, "s3": 9100}
S3_REGION = "us-east-1"
STARTUP_TIMEOUT = 120.0


def find_project_root(start: Path | None = None) -> Path:
    """The checkout this command runs in: the nearest directory holding Pulumi.yaml."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "Pulumi.yaml").exists() and (candidate / "stacks").is_dir():
            return candidate
    raise PlatformError(
        f"no mlflow-platform checkout found at or above {here}; run this from the repository "
        "(or pass --stack-file and --state-dir)"
    )


@dataclass
class Ports:
    tracking: int = DEFAULT_PORTS["tracking"]
    postgres: int = DEFAULT_PORTS["postgres"]
    s3: int = DEFAULT_PORTS["s3"]


@dataclass
class State:
    ports: Ports = field(default_factory=Ports)
    pids: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> State:
        if not path.exists():
            return cls()
        raw = json.loads(path.read_text())
        return cls(ports=Ports(**raw.get("ports", {})), pids=raw.get("pids", {}))

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int | None
    port: int
    healthy: bool
    detail: str


class LocalPlatform:
    def __init__(self, state_dir: Path, stack_file: Path):
        self.state_dir = state_dir.resolve()
        self.stack_file = stack_file
        self.config: StackConfig = load_stack_file(stack_file).config
        self._state_file = self.state_dir / "state.json"
        self._secrets_file = self.state_dir / "secrets.json"
        self.logs = self.state_dir / "logs"

    # -- state ---------------------------------------------------------------------------------
    @property
    def state(self) -> State:
        return State.load(self._state_file)

    def _secrets(self) -> dict[str, str]:
        """Generated once per state dir, kept 0600: nothing secret is ever typed or committed."""
        if self._secrets_file.exists():
            return json.loads(self._secrets_file.read_text())
        values = {
            "postgres_superuser_password": secrets.token_urlsafe(24),
            "db_password": secrets.token_urlsafe(24),
            "flask_secret_key": secrets.token_hex(32),
            "admin_password": secrets.token_urlsafe(18),
            "s3_access_key_id": "local" + secrets.token_hex(6),
            "s3_secret_access_key": secrets.token_urlsafe(30),
        }
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._secrets_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(values, handle, indent=2)
        return values

    def secret_values(self) -> dict[str, str]:
        """The generated secrets, for tools that start servers beside the platform (the benchmark)."""
        return dict(self._secrets())

    def _postgres(self, ports: Ports) -> LocalPostgres:
        return LocalPostgres(
            data_dir=self.state_dir / "postgres" / "data",
            log_file=self.logs / "postgres.log",
            port=ports.postgres,
            superuser_password=self._secrets()["postgres_superuser_password"],
            max_connections=self.config.database.effective_max_connections or 100,
        )

    @property
    def bucket(self) -> str:
        return self.config.artifacts.bucket or f"mlflow-{self.config.environment}-artifacts"

    def endpoints(self, ports: Ports) -> Endpoints:
        return Endpoints(
            db_host="127.0.0.1",
            db_port=ports.postgres,
            db_sslmode="disable",  # the embedded server is loopback-only and built without TLS
            bucket=self.bucket,
            bind_host="127.0.0.1",
            port_override=ports.tracking,
            s3_endpoint_url=f"http://127.0.0.1:{ports.s3}",
            auth_config_path=str(self.state_dir / "auth" / "basic_auth.ini"),
            extra_allowed_hosts=("localhost", "127.0.0.1"),
        )

    def server_spec(self, ports: Ports | None = None) -> ServerSpec:
        return render_server(self.config, self.endpoints(ports or self.state.ports), primary=True)

    def tracking_uri(self, ports: Ports | None = None) -> str:
        return f"http://127.0.0.1:{(ports or self.state.ports).tracking}"

    def s3_client(self, ports: Ports | None = None):
        s = self._secrets()
        return boto3.client(
            "s3", endpoint_url=f"http://127.0.0.1:{(ports or self.state.ports).s3}",
            aws_access_key_id=s["s3_access_key_id"], aws_secret_access_key=s["s3_secret_access_key"],
            region_name=S3_REGION, config=botocore.config.Config(retries={"max_attempts": 2}),
        )

    # -- lifecycle -----------------------------------------------------------------------------
    def up(self, ports: Ports | None = None, *, log=print) -> float:
        """Start whatever is not running (healing crashed parts); returns seconds taken.

        All-or-nothing: ports are checked before anything starts, and if a component fails,
        what this call started is stopped again, so a failed ``up`` leaves no process behind.
        """
        started = time.monotonic()
        state = self.state
        running = [name for name in ("s3", "tracking") if self._owned(state.pids.get(name))]
        if ports is not None and ports != state.ports:
            if running or self._postgres(state.ports).running:
                raise PlatformError(
                    f"the platform is running on ports {asdict(state.ports)}; "
                    "run `mlflow-platform local down` before changing ports"
                )
            state.ports = ports
        ports = state.ports
        self._preflight(state)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        state.save(self._state_file)
        secret_values = self._secrets()
        started_here: list[str] = []
        try:
            self._start_postgres(ports, secret_values, log, started_here)
            self._start_s3(state, secret_values, log, started_here)
            state.save(self._state_file)
            self._start_tracking(state, secret_values, log, started_here)
        except BaseException:
            self._stop(state, started_here)
            raise
        finally:
            state.save(self._state_file)
        return time.monotonic() - started

    def _preflight(self, state: State) -> None:
        """Refuse before starting anything when a port we need is taken by someone else."""
        ports = state.ports
        if not self._postgres(ports).running:
            require_free_port(ports.postgres, "PostgreSQL", "--postgres-port")
        if not self._owned(state.pids.get("s3")):
            require_free_port(ports.s3, "the local S3 API", "--s3-port")
        if not self._owned(state.pids.get("tracking")):
            # A crashed leader can leave its gunicorn workers (ours) holding the port: reap them.
            stop_group(state.pids.get("tracking"), self.state_dir)
            require_free_port(ports.tracking, "the tracking server", "--port")

    def _stop(self, state: State, names: list[str]) -> None:
        for name in reversed(names):
            if name == "postgres":
                self._postgres(state.ports).stop()
            else:
                stop_group(state.pids.pop(name, None), self.state_dir)

    def _start_postgres(self, ports: Ports, secret_values: dict[str, str], log, started: list[str]) -> None:
        pg = self._postgres(ports)
        if pg.healthy():
            log(f"postgres  reusing pid {pg.pid} on port {ports.postgres}")
        else:
            pg.initialize()
            pg.start()
            started.append("postgres")
            log(f"postgres  started pid {pg.pid} on port {ports.postgres}")
        d = self.config.database
        pg.ensure_role_and_databases(
            d.username, secret_values["db_password"], [d.tracking_database, d.auth_database]
        )

    def _start_s3(self, state: State, secret_values: dict[str, str], log, started: list[str]) -> None:
        port = state.ports.s3
        pid = state.pids.get("s3")
        if self._owned(pid) and self._s3_healthy(state.ports):
            log(f"s3        reusing pid {pid} on port {port}")
        else:
            stop_group(pid, self.state_dir)
            require_free_port(port, "the local S3 API", "--s3-port")
            recording = self.state_dir / "s3" / "recording.jsonl"
            recording.parent.mkdir(parents=True, exist_ok=True)
            argv = [sys.executable, "-m", "mlflow_platform.local.s3_server", "--port", str(port),
                    "--recording", str(recording)]
            pid = spawn(argv, env=self._base_env(), log=self.logs / "s3.log")
            state.pids["s3"] = pid
            started.append("s3")
            self._wait(lambda: self._s3_healthy(state.ports), pid, "local S3 API", self.logs / "s3.log")
            log(f"s3        started pid {pid} on port {port}")
        client = self.s3_client(state.ports)
        try:
            client.head_bucket(Bucket=self.bucket)
        except client.exceptions.ClientError:
            client.create_bucket(Bucket=self.bucket)
            log(f"s3        created bucket {self.bucket}")

    def _start_tracking(self, state: State, secret_values: dict[str, str], log, started: list[str]) -> None:
        port = state.ports.tracking
        pid = state.pids.get("tracking")
        if self._owned(pid) and self._tracking_healthy(state.ports):
            log(f"tracking  reusing pid {pid} on port {port}")
            return
        stop_group(pid, self.state_dir)  # a crashed leader can leave its gunicorn workers holding the port
        require_free_port(port, "the tracking server", "--port")
        spec = self.server_spec(state.ports)
        if spec.auth_ini is not None and spec.auth_config_path is not None:
            ini = Path(spec.auth_config_path)
            ini.parent.mkdir(parents=True, exist_ok=True)
            ini.write_text(spec.auth_ini)
        env = self.server_environment(spec)
        workdir = self.state_dir / "server"
        workdir.mkdir(exist_ok=True)
        pid = spawn(spec.argv, env=env, log=self.logs / "tracking.log", cwd=workdir)
        state.pids["tracking"] = pid
        started.append("tracking")
        self._wait(lambda: self._tracking_healthy(state.ports), pid, "tracking server",
                   self.logs / "tracking.log")
        log(f"tracking  started pid {pid} on port {port}")

    def server_environment(self, spec: ServerSpec | None = None) -> dict[str, str]:
        """A server process's environment: a clean base, artifact-store credentials (what IRSA
        injects in AWS) and, with ``spec``, its rendered variables with secrets filled in."""
        secret_values = self._secrets()
        env = {
            **self._base_env(),
            "AWS_ACCESS_KEY_ID": secret_values["s3_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": secret_values["s3_secret_access_key"],
            "AWS_DEFAULT_REGION": S3_REGION,
        }
        if spec is not None:
            env.update(spec.resolve_env({
                DB_PASSWORD: secret_values["db_password"],
                FLASK_SECRET_KEY: secret_values["flask_secret_key"],
                ADMIN_PASSWORD: secret_values["admin_password"],
            }))
        return env

    def stop_tracking(self, *, log=print) -> None:
        """Stop only the tracking server (PostgreSQL and S3 keep running)."""
        state = self.state
        pid = state.pids.pop("tracking", None)
        if pid:
            stop_group(pid, self.state_dir)
            log("tracking  stopped")
        state.save(self._state_file)

    def _wait(self, check, pid: int, what: str, log_file: Path) -> None:
        def died() -> str | None:
            if self._owned(pid):
                return None
            return f"{what} exited during startup; last lines of {log_file}:\n{tail(log_file)}"

        try:
            ok = wait_until(check, timeout=STARTUP_TIMEOUT, abort=died)
        except PlatformError:
            stop_group(pid, self.state_dir)
            raise
        if not ok:
            stop_group(pid, self.state_dir)
            raise PlatformError(
                f"{what} not healthy after {STARTUP_TIMEOUT:.0f}s; last lines of {log_file}:\n{tail(log_file)}"
            )

    def _base_env(self) -> dict[str, str]:
        """A clean environment: the user's MLFLOW_*/AWS_* settings must not leak into servers."""
        venv_bin = str(Path(sys.executable).parent)
        env = {
            "PATH": os.pathsep.join([venv_bin, os.environ.get("PATH", "/usr/bin:/bin")]),
            "HOME": os.environ.get("HOME", str(self.state_dir)),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
        }
        if "TMPDIR" in os.environ:
            env["TMPDIR"] = os.environ["TMPDIR"]
        return env

    def down(self, *, purge: bool = False, log=print) -> None:
        state = self.state
        for name in ("tracking", "s3"):
            pid = state.pids.pop(name, None)
            if pid:
                stop_group(pid, self.state_dir)
                log(f"{name:<9} stopped")
        if self.state_dir.exists():
            pg = self._postgres(state.ports)
            if pg.running:
                pg.stop()
                log("postgres  stopped")
            state.save(self._state_file)
        if purge and self.state_dir.exists():
            import shutil

            shutil.rmtree(self.state_dir)
            log(f"purged    {self.state_dir}")

    # -- observation ---------------------------------------------------------------------------
    def _owned(self, pid: int | None) -> bool:
        return owned(pid, self.state_dir)

    def _s3_healthy(self, ports: Ports) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{ports.s3}/moto-api/", timeout=2).ok
        except requests.RequestException:
            return False

    def _tracking_healthy(self, ports: Ports) -> bool:
        try:
            return requests.get(f"{self.tracking_uri(ports)}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def status(self) -> list[ComponentStatus]:
        state = self.state
        pg = self._postgres(state.ports)
        pg_pid = pg.pid if pg.running else None
        pg_ok = pg.healthy()
        s3_pid, tr_pid = state.pids.get("s3"), state.pids.get("tracking")
        s3_ok = self._owned(s3_pid) and self._s3_healthy(state.ports)
        tr_ok = self._owned(tr_pid) and self._tracking_healthy(state.ports)

        def detail(pid, ok, healthy_text):
            if ok:
                return healthy_text
            return "running but not answering" if self._owned(pid) else "not running"

        return [
            ComponentStatus("postgres", pg_pid, state.ports.postgres, pg_ok,
                            detail(pg_pid, pg_ok, "accepting connections")),
            ComponentStatus("s3", s3_pid if self._owned(s3_pid) else None, state.ports.s3, s3_ok,
                            detail(s3_pid, s3_ok, f"bucket s3://{self.bucket}")),
            ComponentStatus("tracking", tr_pid if self._owned(tr_pid) else None, state.ports.tracking, tr_ok,
                            detail(tr_pid, tr_ok, self.tracking_uri(state.ports))),
        ]

    def database_uri(self, database: str | None = None) -> str:
        """The tracking database with the application role's password (for runbooks, not servers)."""
        d, ports = self.config.database, self.state.ports
        return (f"postgresql+psycopg://{d.username}:{self._secrets()['db_password']}@127.0.0.1:{ports.postgres}/"
                f"{database or d.tracking_database}?sslmode=disable")

    @property
    def backup_dir(self) -> Path:
        return self.state_dir / "backups"

    def client_env(self) -> dict[str, str]:
        """What a client (or the smoke suite) needs to talk to this platform."""
        s, ports = self._secrets(), self.state.ports
        return {
            "MLFLOW_TRACKING_URI": self.tracking_uri(ports),
            "MLFLOW_TRACKING_USERNAME": self.config.server.admin_username,
            "MLFLOW_TRACKING_PASSWORD": s["admin_password"],
            # For the smoke suite's bucket-prefix check only; project-prefixed so that a shell
            # that evals this keeps its own AWS credentials and MLflow never talks to S3 directly.
            "MLFLOW_PLATFORM_ARTIFACT_ROOT": f"s3://{self.bucket}/{self.config.artifacts.prefix}",
            "MLFLOW_PLATFORM_S3_ENDPOINT_URL": f"http://127.0.0.1:{ports.s3}",
            "MLFLOW_PLATFORM_S3_ACCESS_KEY_ID": s["s3_access_key_id"],
            "MLFLOW_PLATFORM_S3_SECRET_ACCESS_KEY": s["s3_secret_access_key"],
        }

    def export_lines(self) -> str:
        env = self.client_env()
        return "export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
