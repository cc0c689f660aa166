"""The local platform: embedded PostgreSQL, SeaweedFS's S3 API and the tracking server, as one unit.

The tracking server runs exactly what ``render_server`` renders for the ``local`` stack; only
the endpoints differ from AWS (loopback PostgreSQL instead of RDS, SeaweedFS instead of S3,
static keys instead of IRSA). Everything lives under one private state directory, so ``down``
keeps the data and ``down --purge`` removes it; ``up`` and ``down`` hold its lock.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import botocore.exceptions
import psycopg
import requests

from ..config import StackConfig, load_stack_file
from ..database.connection import connect as connect_db
from ..errors import PlatformError
from ..files import default_state_dir, exclusive_lock, private_dir, read_json, write_private
from ..server_spec import (
    ADMIN_PASSWORD,
    DB_OWNER_PASSWORD,
    DB_PASSWORD,
    FLASK_SECRET_KEY,
    Endpoints,
    SecretRef,
    ServerSpec,
    render_migration,
    render_server,
)
from . import prometheus as local_prometheus
from .alb_signer import LOCAL_SIGNER, LocalAlb
from .object_store import INTERNAL_PORTS, ObjectStore
from .object_store import REGION as S3_REGION
from .postgres import LocalPostgres
from .processes import (
    free_port,
    free_port_run,
    owned,
    require_free_port,
    spawn,
    stop_group,
    tail,
    wait_until,
)
from .secrets_file import SecretsFile

DEFAULT_PORTS = {
    "tracking": 5000,
    "postgres": 5433,
    "s3": 9100,
    "s3_internal": 9101,
    "prometheus": 9091,
    "postgres_replica": 5434,
}
STARTUP_TIMEOUT = 120.0
#: Seconds between SIGTERM and SIGKILL. SeaweedFS's graceful gRPC stop can hang for longer than
#: 15 s; its writes are durable without it (the fault drills SIGKILL it mid-upload).
#: "alb-keys": the key server an older version ran (the server now reads the key from the state dir).
STOP_TIMEOUT = {"tracking": 15.0, "s3": 3.0, "alb-keys": 3.0, "prometheus": 10.0}


def packaged_local_stack() -> Path:
    """The ``local`` stack shipped inside the package (``stacks/local.yaml`` links to it)."""
    return Path(str(importlib.resources.files("mlflow_platform.local") / "local.yaml"))


def open_platform(state_dir: Path | None = None, stack_file: Path | None = None) -> LocalPlatform:
    """The platform for a state dir, from any working directory.

    The stack file is the one given, else the one the state dir was last started with, else the
    packaged ``local`` stack.
    """
    state = (state_dir or default_state_dir()).expanduser().resolve()
    if stack_file is None:
        recorded = State.load(state / "state.json").stack_file if (state / "state.json").exists() else None
        stack_file = Path(recorded) if recorded and Path(recorded).exists() else packaged_local_stack()
    return LocalPlatform(state_dir=state, stack_file=stack_file)


@dataclass
class Ports:
    tracking: int = DEFAULT_PORTS["tracking"]
    postgres: int = DEFAULT_PORTS["postgres"]
    s3: int = DEFAULT_PORTS["s3"]
    s3_internal: int = DEFAULT_PORTS["s3_internal"]  # first of seven consecutive SeaweedFS ports
    prometheus: int = DEFAULT_PORTS["prometheus"]  # only with --with-prometheus
    postgres_replica: int = DEFAULT_PORTS["postgres_replica"]  # only with database.readReplica

    @classmethod
    def free(cls) -> Ports:
        """Ports that are free now: for tests, benchmarks and throwaway platforms."""
        return cls(
            tracking=free_port(),
            postgres=free_port(),
            s3=free_port(),
            s3_internal=free_port_run(len(INTERNAL_PORTS)),
            prometheus=free_port(),
            postgres_replica=free_port(),
        )


@dataclass
class State:
    ports: Ports = field(default_factory=Ports)
    pids: dict[str, int] = field(default_factory=dict)
    stack_file: str | None = None
    #: optional components this state dir runs (``prometheus``): kept across `up`, healed like the rest
    extras: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> State:
        if not path.exists():
            return cls()
        raw = read_json(path, "delete it and run `mlflow-platform local up` (it only records ports and pids)")
        known = {k: v for k, v in raw.get("ports", {}).items() if k in Ports.__dataclass_fields__}
        return cls(
            ports=Ports(**known),
            pids=raw.get("pids", {}),
            stack_file=raw.get("stack_file"),
            extras=raw.get("extras", []),
        )

    def save(self, path: Path) -> None:
        import json

        write_private(path, json.dumps(asdict(self), indent=2))


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
        self.stack_file = stack_file.resolve()
        self.config: StackConfig = load_stack_file(stack_file).config
        self._state_file = self.state_dir / "state.json"
        self._secrets_file = SecretsFile(self.state_dir / "secrets.json", self._has_data)
        self.logs = self.state_dir / "logs"

    # -- state ---------------------------------------------------------------------------------
    @property
    def state(self) -> State:
        return State.load(self._state_file)

    def _has_data(self) -> bool:
        return (self.state_dir / "postgres" / "data" / "PG_VERSION").exists() or any(
            (self.state_dir / "s3" / "data").glob("*.dat")
        )

    def _secrets(self) -> dict[str, str]:
        return self._secrets_file.load()

    def secret_values(self) -> dict[str, str]:
        """The generated secrets, for tools that start servers beside the platform (the benchmark)."""
        return dict(self._secrets())

    def _postgres(self, ports: Ports, *, password: bool = True) -> LocalPostgres:
        """``password=False`` for observing and stopping, which need no secret (nor a readable file)."""
        home = self.state_dir / "postgres"
        return LocalPostgres(
            data_dir=home / "data",
            log_file=home / "postgres.log",
            port=ports.postgres,
            superuser_password=self._secrets()["postgres_superuser_password"] if password else "",
            max_connections=self.config.database.effective_max_connections or 100,
        )

    def replica(self, ports: Ports | None = None, *, password: bool = True) -> LocalPostgres:
        """The streaming replica of ``database.readReplica`` (``<state>/postgres-replica``)."""
        home = self.state_dir / "postgres-replica"
        primary = self._postgres(ports or self.state.ports, password=password)
        return LocalPostgres(
            data_dir=home / "data",
            log_file=home / "postgres.log",
            port=(ports or self.state.ports).postgres_replica,
            superuser_password=primary.superuser_password,
            # a hot standby refuses to start with fewer than its primary's (PostgreSQL docs, "Hot Standby")
            max_connections=primary.max_connections,
        )

    def object_store(self, ports: Ports | None = None) -> ObjectStore:
        ports, s = ports or self.state.ports, self._secrets()
        return ObjectStore(
            root=self.state_dir / "s3",
            s3_port=ports.s3,
            internal_base_port=ports.s3_internal,
            bucket=self.bucket,
            access_key_id=s["s3_access_key_id"],
            secret_access_key=s["s3_secret_access_key"],
            jwt_keys=self._secrets_file.jwt_keys(s),
        )

    @property
    def bucket(self) -> str:
        return self.config.artifacts.bucket or f"mlflow-{self.config.environment}-artifacts"

    def endpoints(self, ports: Ports) -> Endpoints:
        return Endpoints(
            db_host="127.0.0.1",
            db_port=ports.postgres,
            db_sslmode="disable",  # the embedded server is loopback-only and built without TLS
            db_sslrootcert=None,
            db_replica_host="127.0.0.1" if self.config.database.read_replica else None,
            db_replica_port=ports.postgres_replica,
            bucket=self.bucket,
            bind_host="127.0.0.1",
            port_override=ports.tracking,
            s3_endpoint_url=f"http://127.0.0.1:{ports.s3}",
            auth_config_path=str(self.state_dir / "auth" / "basic_auth.ini"),
            trace_archival_config_path=str(self.state_dir / "auth" / "trace_archival.yaml"),
            extra_allowed_hosts=("localhost", "127.0.0.1"),
            metrics_dir=str(self.metrics_dir),
            sso_config_path=str(self.state_dir / "auth" / "sso.json"),
            sso_signer=LOCAL_SIGNER,
            # The local ALB's public key, read from the state dir: no process or port to impersonate.
            sso_key_endpoint=f"file://{self.alb.public_dir}",
            sso_trusted_proxies=("127.0.0.1/32",),  # locally, whoever holds the signing key is the ALB
        )

    @property
    def alb(self) -> LocalAlb:
        """The local stand-in for the ALB's signing (stacks with ``sso``)."""
        return LocalAlb(self.state_dir / "alb")

    @property
    def metrics_dir(self) -> Path:
        """prometheus_client's multiprocess files; emptied before each server start (like a pod's)."""
        return self.state_dir / "server" / "metrics"

    def server_spec(self, ports: Ports | None = None) -> ServerSpec:
        return render_server(self.config, self.endpoints(ports or self.state.ports), primary=True)

    def tracking_uri(self, ports: Ports | None = None) -> str:
        return f"http://127.0.0.1:{(ports or self.state.ports).tracking}"

    @property
    def metrics_url(self) -> str | None:
        return f"{self.tracking_uri()}/metrics" if self.config.server.prometheus else None

    def s3_client(self, ports: Ports | None = None):
        return self.object_store(ports).client()

    # -- lifecycle -----------------------------------------------------------------------------
    def up(self, ports: Ports | None = None, *, log=print, prometheus: bool | None = None) -> float:
        """Start whatever is not running (healing crashed parts); returns seconds taken.

        All-or-nothing: ports are checked before anything starts, and if a component fails,
        what this call started is stopped again, so a failed ``up`` leaves no process behind.
        Holds the state-dir lock: a second concurrent ``up`` waits, then reuses what this one
        started. ``prometheus`` turns the local Prometheus on or off; None keeps the last choice.
        """
        started = time.monotonic()
        with exclusive_lock(self.state_dir, on_wait=log):
            self._up_locked(ports, log, prometheus)
        return time.monotonic() - started

    def _up_locked(self, ports: Ports | None, log, prometheus: bool | None = None) -> None:
        state = self.state
        self._choose_prometheus(state, prometheus, log)
        if ports is not None and ports != state.ports:
            if self._anything_running(state):
                raise PlatformError(
                    f"the platform is running on ports {asdict(state.ports)}; "
                    "run `mlflow-platform local down` before changing ports"
                )
            state.ports = ports
        secret_values = self._secrets()  # before anything starts: a bad secrets file changes nothing
        self._preflight(state)
        private_dir(self.logs)
        state.stack_file = str(self.stack_file)
        state.save(self._state_file)
        started_here: list[str] = []
        try:
            self._start_postgres(state.ports, secret_values, log, started_here)
            if self.config.database.read_replica:
                self._start_replica(state.ports, log, started_here)
            self._start_s3(state, log, started_here)
            state.save(self._state_file)
            if not self._tracking_healthy(state.ports):
                self._migrate(state.ports, secret_values, log)
            self._sync_admin_password(state.ports, secret_values, log)
            if self.config.sso:
                self.alb.ensure_keys()
            self._start_tracking(state, log, started_here)
            self._sync_teams(state, log)
            if "prometheus" in state.extras:
                self._start_prometheus(state, log, started_here)
        except BaseException:
            self._stop(state, started_here)
            raise
        finally:
            state.save(self._state_file)

    def _choose_prometheus(self, state: State, wanted: bool | None, log) -> None:
        if wanted and "prometheus" not in state.extras:
            local_prometheus.binary()  # refused before anything starts when it is missing
            state.extras.append("prometheus")
        elif wanted is False and "prometheus" in state.extras:
            state.extras.remove("prometheus")
            if pid := state.pids.pop("prometheus", None):
                stop_group(pid, self.state_dir, timeout=STOP_TIMEOUT["prometheus"])
                log("prometheus stopped (--without-prometheus)")

    def _anything_running(self, state: State) -> bool:
        return (
            any(self._owned(state.pids.get(n)) for n in ("s3", "tracking", "prometheus"))
            or self._postgres(state.ports, password=False).running
            or self.replica(state.ports, password=False).running
        )

    def _preflight(self, state: State) -> None:
        """Refuse before starting anything when a port we need is taken by someone else."""
        ports = state.ports
        if not self._postgres(ports, password=False).running:
            require_free_port(ports.postgres, "PostgreSQL", "--postgres-port")
        if self.config.database.read_replica and not self.replica(ports, password=False).running:
            require_free_port(ports.postgres_replica, "the PostgreSQL replica", "--postgres-replica-port")
        if not self._owned(state.pids.get("s3")):
            stop_group(state.pids.get("s3"), self.state_dir)
            require_free_port(ports.s3, "the local S3 API", "--s3-port")
            for port in self.object_store(ports).internal_ports().values():
                require_free_port(port, "SeaweedFS (internal)", "--s3-internal-port")
        stop_group(state.pids.pop("alb-keys", None), self.state_dir)  # an older version's key server
        if not self._owned(state.pids.get("tracking")):
            # A crashed leader can leave its gunicorn workers (ours) holding the port: reap them.
            stop_group(state.pids.get("tracking"), self.state_dir)
            require_free_port(ports.tracking, "the tracking server", "--port")
        if "prometheus" in state.extras and not self._owned(state.pids.get("prometheus")):
            require_free_port(ports.prometheus, "the local Prometheus", "--prometheus-port")

    def _stop(self, state: State, names: list[str]) -> None:
        for name in reversed(names):
            if name == "postgres":
                self._postgres(state.ports).stop()
            elif name == "postgres-replica":
                self.replica(state.ports).stop()
            else:
                stop_group(state.pids.pop(name, None), self.state_dir, timeout=STOP_TIMEOUT[name])

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
        pg.ensure_role_and_databases(d.username, secret_values["db_password"], [d.tracking_database, d.auth_database])

    def _start_replica(self, ports: Ports, log, started: list[str]) -> None:
        """A hot standby of the local PostgreSQL, cloned once and kept in step by streaming
        replication, as an RDS read replica is."""
        replica = self.replica(ports)
        if replica.healthy():
            log(f"replica   reusing pid {replica.pid} on port {ports.postgres_replica}")
            return
        cloning = not replica.initialized
        replica.clone_from(self._postgres(ports))
        replica.start()
        started.append("postgres-replica")
        verb = "cloned and started" if cloning else "started"
        log(f"replica   {verb} pid {replica.pid} on port {ports.postgres_replica} (streaming from {ports.postgres})")

    def _start_s3(self, state: State, log, started: list[str]) -> None:
        store, pid = self.object_store(state.ports), state.pids.get("s3")
        if self._owned(pid) and store.healthy():
            log(f"s3        reusing pid {pid} on port {store.s3_port}")
            return
        stop_group(pid, self.state_dir)
        private_dir(store.root)
        store.write_config()
        pid = spawn(store.argv(), env=self._base_env(), log=self.logs / "s3.log", cwd=store.root)
        state.pids["s3"] = pid
        started.append("s3")
        self._wait(store.ready_for_bucket, pid, "SeaweedFS S3 API", self.logs / "s3.log")
        if store.ensure_bucket():
            log(f"s3        created bucket {self.bucket}")
        self._wait(store.healthy, pid, "SeaweedFS S3 API", self.logs / "s3.log")
        log(f"s3        started pid {pid} on port {store.s3_port} (SeaweedFS)")

    def _migrate(self, ports: Ports, secret_values: dict[str, str], log) -> None:
        """The migration Job's command, as rendered for AWS: schemas as the owner, then the
        server's DML-only role (so the local server runs with the same rights as in AWS)."""
        spec = render_migration(self.config, self.endpoints(ports))
        env = {**self._base_env(), **spec.resolve_env(self._secret_map(secret_values))}
        log_file = self.logs / "migrate.log"
        with os.fdopen(os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as sink:
            result = subprocess.run(spec.argv, env=env, stdout=sink, stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0:
            raise PlatformError(f"database migration failed; last lines of {log_file}:\n{tail(log_file)}")
        log("database  schemas up to date; server role granted data rights only")

    def _secret_map(self, secret_values: dict[str, str]) -> dict[SecretRef, str]:
        return {
            DB_PASSWORD: secret_values["app_db_password"],
            DB_OWNER_PASSWORD: secret_values["db_password"],
            FLASK_SECRET_KEY: secret_values["flask_secret_key"],
            ADMIN_PASSWORD: secret_values["admin_password"],
        }

    def _sync_admin_password(self, ports: Ports, secret_values: dict[str, str], log) -> None:
        """Apply an admin password edited in secrets.json: MLflow only sets it when creating the user.

        Checked against the stored hash (cheap); only a mismatch goes through MLflow's own store.
        """
        from werkzeug.security import check_password_hash

        admin, password = self.config.server.admin_username, secret_values["admin_password"]
        stored = self._stored_password_hash(ports, admin)
        if stored is None or check_password_hash(stored, password):
            return  # first start (the server creates the admin from its environment), or unchanged
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore
        store = SqlAlchemyStore()
        store.init_db(self.database_uri(self.config.database.auth_database, ports))
        store.update_user(admin, password=password)
        store.engine.dispose()
        log(f"auth      applied the admin password from {self._secrets_file.path}")

    def _connect_app_role(self, ports: Ports, database: str) -> psycopg.Connection:
        """A connection as the server's role (data rights only), not the owner or the superuser."""
        return psycopg.connect(
            host="127.0.0.1",
            port=ports.postgres,
            user=self.config.database.app_username,
            dbname=database,
            password=self._secrets()["app_db_password"],
            connect_timeout=5,
        )

    def _stored_password_hash(self, ports: Ports, username: str) -> str | None:
        with connect_db(self.database_uri(self.config.database.auth_database, ports)) as conn:
            if not conn.execute("SELECT to_regclass('public.users') IS NOT NULL").fetchone()[0]:
                return None
            row = conn.execute("SELECT password_hash FROM users WHERE username = %s", (username,)).fetchone()
        return row[0] if row else None

    def _start_tracking(self, state: State, log, started: list[str]) -> None:
        port = state.ports.tracking
        pid = state.pids.get("tracking")
        if self._owned(pid) and self._tracking_healthy(state.ports):
            log(f"tracking  reusing pid {pid} on port {port}")
            return
        stop_group(pid, self.state_dir)  # a crashed leader can leave its gunicorn workers holding the port
        require_free_port(port, "the tracking server", "--port")
        spec = self.server_spec(state.ports)
        for path, text in spec.files.items():
            private_dir(Path(path).parent)
            write_private(Path(path), text)
        workdir = private_dir(self.state_dir / "server")
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        private_dir(self.metrics_dir)
        pid = spawn(spec.argv, env=self.server_environment(spec), log=self.logs / "tracking.log", cwd=workdir)
        state.pids["tracking"] = pid
        started.append("tracking")
        self._wait(lambda: self._tracking_healthy(state.ports), pid, "tracking server", self.logs / "tracking.log")
        log(f"tracking  started pid {pid} on port {port}")

    def prometheus(self, ports: Ports | None = None) -> local_prometheus.LocalPrometheus:
        ports = ports or self.state.ports
        return local_prometheus.LocalPrometheus(
            self.state_dir / "prometheus", ports.prometheus, ports.tracking, self.config
        )

    def _start_prometheus(self, state: State, log, started: list[str]) -> None:
        """After the server: the scrape's ops user needs it, and the first scrape should find it."""
        prom, pid = self.prometheus(state.ports), state.pids.get("prometheus")
        if self._owned(pid) and prom.ready():
            log(f"prometheus reusing pid {pid} on port {prom.port}")
            return
        stop_group(pid, self.state_dir)
        admin = (self.config.server.admin_username, self._secrets()["admin_password"])
        local_prometheus.ensure_ops_user(self.tracking_uri(state.ports), admin, prom.ops_password())
        prom.write_config()
        pid = spawn(prom.argv(), env=self._base_env(), log=self.logs / "prometheus.log", cwd=prom.root)
        state.pids["prometheus"] = pid
        started.append("prometheus")
        self._wait(lambda: prom.scrape_health() == "up", pid, "Prometheus's first scrape", self.logs / "prometheus.log")
        log(f"prometheus started pid {pid} on {prom.url} (scraping as {local_prometheus.OPS_USER})")

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
            env.update(spec.resolve_env(self._secret_map(secret_values)))
        return env

    def stop_tracking(self, *, log=print) -> None:
        """Stop only the tracking server (PostgreSQL and S3 keep running)."""
        with exclusive_lock(self.state_dir, on_wait=log):
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
        if not self.state_dir.exists():
            return
        with exclusive_lock(self.state_dir, on_wait=log):
            self._down_locked(log)
            if purge:
                shutil.rmtree(self.state_dir)
                log(f"purged    {self.state_dir}")

    def _down_locked(self, log) -> None:
        state = self.state
        for name in ("prometheus", "tracking", "alb-keys", "s3"):
            pid = state.pids.pop(name, None)
            if pid:
                stop_group(pid, self.state_dir, timeout=STOP_TIMEOUT[name])
                log(f"{name:<9} stopped")
        replica = self.replica(state.ports, password=False)
        if replica.running:
            replica.stop()
            log("replica   stopped")
        pg = self._postgres(state.ports, password=False)
        if pg.running:
            pg.stop()
            log("postgres  stopped")
        state.save(self._state_file)

    # -- observation ---------------------------------------------------------------------------
    def _owned(self, pid: int | None) -> bool:
        return owned(pid, self.state_dir)

    def _tracking_healthy(self, ports: Ports) -> bool:
        try:
            return requests.get(f"{self.tracking_uri(ports)}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def _tracking_serves(self, ports: Ports) -> str | None:
        """None when an authenticated call that reads both databases succeeds, else why not."""
        if not self._tracking_healthy(ports):
            return "/health does not answer"
        auth = (self.config.server.admin_username, self._secrets()["admin_password"])
        try:
            response = requests.get(
                f"{self.tracking_uri(ports)}/api/2.0/mlflow/experiments/search",
                params={"max_results": 1},
                auth=auth,
                timeout=10,
            )
        except requests.RequestException as exc:
            return f"API call failed: {type(exc).__name__}"
        return None if response.ok else f"/health answers, but the API returns {response.status_code}"

    def _postgres_accepts(self, ports: Ports) -> str | None:
        try:
            with self._connect_app_role(ports, self.config.database.tracking_database) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            return f"no connection: {str(exc).strip().splitlines()[0][:80]}"
        return None

    def status(self) -> list[ComponentStatus]:
        """Each component checked for real: a database connection, an authenticated S3 request,
        ``/health`` plus an authenticated API call that reads the database."""
        state, ports = self.state, self.state.ports
        pg = self._postgres(ports, password=False)
        pg_pid = pg.pid if pg.running else None
        s3_pid = state.pids.get("s3") if self._owned(state.pids.get("s3")) else None
        tr_pid = state.pids.get("tracking") if self._owned(state.pids.get("tracking")) else None
        pg_problem = self._postgres_accepts(ports) if pg_pid else "not running"
        s3_ok = bool(s3_pid) and self.object_store(ports).healthy()
        tr_problem = self._tracking_serves(ports) if tr_pid else "not running"
        return [
            ComponentStatus(
                "postgres", pg_pid, ports.postgres, pg_problem is None, pg_problem or "accepting connections"
            ),
            ComponentStatus(
                "s3",
                s3_pid,
                ports.s3,
                s3_ok,
                self._capacity(ports)
                if s3_ok
                else ("not answering authenticated requests" if s3_pid else "not running"),
            ),
            ComponentStatus(
                "tracking", tr_pid, ports.tracking, tr_problem is None, tr_problem or self.tracking_uri(ports)
            ),
            *([self._replica_status(ports)] if self.config.database.read_replica else []),
            *([self._prometheus_status(state)] if "prometheus" in state.extras else []),
        ]

    def _replica_status(self, ports: Ports) -> ComponentStatus:
        replica = self.replica(ports)
        if not replica.running:
            return ComponentStatus("replica", None, ports.postgres_replica, False, "not running")
        lag = replica.replication_lag()
        detail = (
            f"not streaming from {ports.postgres}; see {replica.log_file}, or delete {replica.home} to clone it again"
            if lag is None
            else f"streaming from {ports.postgres}, {lag:.1f}s behind"
        )
        return ComponentStatus("replica", replica.pid, ports.postgres_replica, lag is not None, detail)

    def _prometheus_status(self, state: State) -> ComponentStatus:
        prom, pid = self.prometheus(state.ports), state.pids.get("prometheus")
        running = self._owned(pid) and prom.ready()
        scrape = prom.scrape_health() if running else ""
        detail = f"{prom.url} (scrape of the server: {scrape})" if running else "not running"
        return ComponentStatus("prometheus", pid if running else None, prom.port, running and scrape == "up", detail)

    def _capacity(self, ports: Ports) -> str:
        """The bucket's objects and bytes against the thresholds the AWS stacks alarm on."""
        m = self.config.monitoring
        try:
            objects, size = self.object_store(ports).usage()
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            return f"bucket s3://{self.bucket} (usage unreadable)"
        used = size / 1024**3
        return (
            f"bucket s3://{self.bucket}: {objects:,} objects, {used:.2f} GB "
            f"({used / m.artifact_store_max_gb:.1%} of the {m.artifact_store_max_gb} GB alarm)"
        )

    def database_uri(self, database: str | None = None, ports: Ports | None = None) -> str:
        """A database as the schema owner, password included (for runbooks, not servers)."""
        d, ports = self.config.database, ports or self.state.ports
        return (
            f"postgresql+psycopg://{d.username}:{self._secrets()['db_password']}@127.0.0.1:{ports.postgres}/"
            f"{database or d.tracking_database}?sslmode=disable"
        )

    @property
    def backup_dir(self) -> Path:
        return self.state_dir / "backups"

    @property
    def team_passwords_file(self) -> Path:
        return self.state_dir / "team_passwords.json"

    def _sync_teams(self, state: State, log) -> None:
        """The stack's teams onto the server, as the deploy's teams Job does (idempotent). Skipped
        when neither the teams nor the server process changed since the last sync (`teams sync
        --local` forces one)."""
        if not self.config.teams:
            return
        marker = self.state_dir / "teams.synced"
        stamp = json.dumps([[t.model_dump() for t in self.config.teams], state.pids.get("tracking")])
        if marker.exists() and marker.read_text() == stamp:
            log(f"teams     in sync with the stack ({len(self.config.teams)} declared)")
            return
        env = {**self._base_env(), "MLFLOW_PLATFORM_STATE_DIR": str(self.state_dir)}
        argv = [str(Path(sys.executable).parent / "mlflow-platform"), "teams", "sync", "--local"]
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
        if result.returncode != 0:
            raise PlatformError(f"teams sync failed: {(result.stdout + result.stderr).strip()[-800:]}")
        write_private(marker, stamp)
        last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "teams: synced"
        log(f"teams     {last.removeprefix('teams: ')} ({len(self.config.teams)} declared)")

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

    @property
    def started_before(self) -> bool:
        return self._secrets_file.path.exists()
