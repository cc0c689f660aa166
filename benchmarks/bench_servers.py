"""The servers the load benchmark compares, on one throwaway local platform: stock MLflow, the
guide's command, the rendered config under gunicorn and under uvicorn, and tuning candidates."""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml

from mlflow_platform.config import StackConfig, load_stack_file
from mlflow_platform.local.platform import LocalPlatform, Ports
from mlflow_platform.local.processes import alive, spawn, stop_group, tail, wait_until
from mlflow_platform.server_spec import render_server

ROOT = Path(__file__).resolve().parent.parent


# -- server variants --------------------------------------------------------------------------------
@dataclass
class Variant:
    key: str
    label: str
    auth: bool
    argv: list[str]
    env: dict[str, str]
    files: dict[str, str] = field(default_factory=dict)


def bench_stack(work: Path, server_overrides: dict, database_overrides: dict) -> Path:
    """The local stack with the renderer's *defaults* for the server (not local.yaml's laptop
    settings) and a PostgreSQL roomy enough that no variant is refused a connection."""
    document = yaml.safe_load((ROOT / "stacks" / "local.yaml").read_text())
    cfg = document["config"]
    cfg["mlflow-platform:server"] = {"replicas": 1, "basicAuth": True, **server_overrides}
    cfg["mlflow-platform:database"] = {"maxConnections": 400, "reservedConnections": 10, **database_overrides}
    cfg.pop("mlflow-platform:teams", None)  # one workspace, as a stack without teams: the figures stay comparable
    cfg.pop("mlflow-platform:sso", None)  # machines use basic auth either way; the published figures are without it
    path = work / "bench.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


class LocalBench:
    """The throwaway platform and the variants run against its PostgreSQL and S3."""

    def __init__(self, work: Path, server_overrides: dict, database_overrides: dict):
        self.work = work
        self.platform = LocalPlatform(work / "state", bench_stack(work, server_overrides, database_overrides))
        self.ports = Ports.free()
        #: Another checkout with its own `.venv` (`--baseline`): the code this change is measured against.
        self.baseline_dir: Path | None = None

    @property
    def config(self) -> StackConfig:
        return self.platform.config

    def start(self) -> None:
        self.platform.up(self.ports, log=lambda _: None)

    def stop(self) -> None:
        self.platform.down(purge=True, log=lambda _: None)

    def secrets(self) -> dict[str, str]:
        return self.platform.secret_values()

    def admin_auth(self) -> tuple[str, str]:
        return self.config.server.admin_username, self.secrets()["admin_password"]

    def _s3_env(self) -> dict[str, str]:
        return {**self.platform.server_environment(), "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{self.ports.s3}"}

    def stock(self, port: int) -> Variant:
        return Variant(
            "stock",
            "(a) stock `mlflow server`, no auth",
            False,
            [
                "mlflow",
                "server",
                "--backend-store-uri",
                self.platform.database_uri(),
                "--artifacts-destination",
                f"s3://{self.platform.bucket}/stock",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            self._s3_env(),
        )

    def guide(self, port: int) -> Variant:
        """The guide's startup command as written, plus basic-auth with MLflow's default ini
        (credential cache off) pointed at the shared PostgreSQL."""
        from mlflow.server import auth as mlflow_auth

        ini_path = str(self.work / "guide" / "basic_auth.ini")
        default_ini = (Path(mlflow_auth.__file__).parent / "basic_auth.ini").read_text()
        auth_db = self.platform.database_uri(self.config.database.auth_database)
        ini = re.sub(r"(?m)^database_uri = .*$", f"database_uri = {auth_db}", default_ini)
        s = self.secrets()
        return Variant(
            "guide",
            "(b) the guide's command + basic-auth",
            True,
            [
                "mlflow",
                "server",
                "--backend-store-uri",
                self.platform.database_uri(),
                "--default-artifact-root",
                f"s3://{self.platform.bucket}/guide/",
                "--artifacts-destination",
                f"s3://{self.platform.bucket}/guide/",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "4",
                "--gunicorn-opts",
                "--timeout 120 --keep-alive 5",
                "--app-name",
                "basic-auth",
            ],
            {
                **self._s3_env(),
                "MLFLOW_AUTH_CONFIG_PATH": ini_path,
                "MLFLOW_FLASK_SERVER_SECRET_KEY": s["flask_secret_key"],
                "MLFLOW_AUTH_ADMIN_PASSWORD": s["admin_password"],
            },
            {ini_path: ini},
        )

    def rendered(
        self, port: int, *, config: StackConfig | None = None, key: str = "rendered", label: str | None = None
    ) -> Variant:
        spec = render_server(
            config or self.config, self.platform.endpoints(dataclasses.replace(self.ports, tracking=port))
        )
        files = spec.files
        return Variant(
            key,
            label or "(c) this project's rendered config (gunicorn, platform-auth)",
            True,
            list(spec.argv),
            self.platform.server_environment(spec),
            files,
        )

    def workspaces(self, port: int) -> Variant:
        """The rendered configuration of a stack with teams: workspaces on and NO_PERMISSIONS by
        default (the local stack's teams); the client user works through its explicit grants."""
        teams = load_stack_file(ROOT / "stacks" / "local.yaml").config.teams
        config = self.config.model_copy(update={"teams": teams})
        return self.rendered(
            port, config=config, key="workspaces", label="(e) rendered config with teams (workspaces on)"
        )

    def baseline(self, port: int) -> Variant:
        """The same rendered configuration served by another checkout's code (its ``.venv``), so a
        change to the server's app is measured against the code before it, on the same data."""
        variant = self.rendered(port, key="baseline", label=f"(c-) rendered config, code of {self.baseline_dir}")
        return self._on_baseline_code(variant)

    def workspaces_baseline(self, port: int) -> Variant:
        """``workspaces`` served by the baseline checkout's code (a change to a teams stack's path)."""
        variant = self.workspaces(port)
        variant.key, variant.label = (
            "workspaces_baseline",
            f"(e-) rendered config with teams, code of {self.baseline_dir}",
        )
        return self._on_baseline_code(variant)

    def _on_baseline_code(self, variant: Variant) -> Variant:
        assert self.baseline_dir is not None, "--baseline names the checkout"
        bin_dir = self.baseline_dir / ".venv" / "bin"
        variant.argv[0] = str(bin_dir / "mlflow")
        variant.env["PATH"] = f"{bin_dir}{os.pathsep}{variant.env.get('PATH', '')}"
        return variant

    def previous(self, port: int) -> Variant:
        """The rendered configuration as it was before this change: MLflow's basic-auth app, which
        under gunicorn serves only the Flask routes (no OTLP, jobs, gateway, ...), and no metrics."""
        variant = self.rendered(
            port, key="previous", label="(c0) the rendered config before: basic-auth app, no metrics"
        )
        argv = variant.argv
        argv[argv.index("--app-name") + 1] = "basic-auth"
        if "--expose-prometheus" in argv:  # the previous config had no metrics endpoint either
            at = argv.index("--expose-prometheus")
            del argv[at : at + 2]
        return variant

    def uvicorn(self, port: int) -> Variant:
        """The rendered configuration served by uvicorn (MLflow 3's default) instead of gunicorn.

        uvicorn runs MLflow's Flask handlers in a 40-thread pool per worker, so the rendered pools
        (sized for gunicorn's threads) time out under load; it gets SQLAlchemy's default 5 + 10,
        as the stock server has, so that uvicorn itself is what is measured."""
        variant = self.rendered(port, key="uvicorn", label="(d) rendered config under uvicorn (pool 5 + 10)")
        argv = variant.argv
        at = argv.index("--gunicorn-opts")
        argv[at : at + 2] = ["--uvicorn-opts", f"--timeout-keep-alive {self.config.server.keep_alive_seconds}"]
        # Under uvicorn MLflow's own basic-auth app is already the whole FastAPI surface.
        argv[argv.index("--app-name") + 1] = "basic-auth"
        variant.env.update({"MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "5", "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "10"})
        return variant

    def launch(self, variant: Variant) -> int:
        for path, text in variant.files.items():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
        workdir = self.platform.state_dir / f"bench-{variant.key}"  # under the state dir: ours to stop
        workdir.mkdir(parents=True, exist_ok=True)
        log = self.work / "logs" / f"{variant.key}.log"
        pid = spawn(variant.argv, env=variant.env, log=log, cwd=workdir)
        port = int(variant.argv[variant.argv.index("--port") + 1])

        def healthy() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        def died() -> str | None:
            return None if alive(pid) else f"{variant.label} exited; last lines of {log}:\n{tail(log)}"

        if not wait_until(healthy, timeout=120, abort=died):
            stop_group(pid, self.platform.state_dir)
            raise RuntimeError(f"{variant.label} not healthy after 120 s:\n{tail(log)}")
        return pid

    def halt(self, pid: int) -> None:
        stop_group(pid, self.platform.state_dir, timeout=40)


POOL_FOR_4_THREADS = {"poolSize": 3, "maxOverflow": 2}
POOL_FOR_1_THREAD = {"poolSize": 1, "maxOverflow": 1}

TUNING = (
    # (name, server overrides, database overrides): each at 32 clients on the same data. Every
    # setting a name states is explicit, so a later change of default cannot mislabel a candidate
    # (a test renders each and checks workers and threads against its name).
    ("gthread 4x2 (default)", {}, {}),
    ("gthread 4x4", {"threads": 4}, POOL_FOR_4_THREADS),
    ("gthread 2x4", {"workers": 2, "threads": 4}, POOL_FOR_4_THREADS),
    ("gthread 3x4", {"workers": 3, "threads": 4}, POOL_FOR_4_THREADS),
    ("gthread 6x4", {"workers": 6, "threads": 4}, POOL_FOR_4_THREADS),
    ("gthread 6x1", {"workers": 6, "threads": 1}, POOL_FOR_1_THREAD),
    ("gthread 8x1", {"workers": 8, "threads": 1}, POOL_FOR_1_THREAD),
    ("gthread 4x1", {"workers": 4, "threads": 1}, POOL_FOR_1_THREAD),
    ("gthread 4x8", {"workers": 4, "threads": 8}, {"poolSize": 5, "maxOverflow": 4}),
    ("sync 4", {"workerClass": "sync", "workers": 4, "threads": 1}, POOL_FOR_1_THREAD),
    ("sync 8", {"workerClass": "sync", "workers": 8, "threads": 1}, POOL_FOR_1_THREAD),
    ("4x2, no max-requests", {"maxRequests": 0, "maxRequestsJitter": 0}, {}),
    ("4x2, auth cache off", {"authCacheTtlSeconds": 0}, {}),
    ("4x2, basic-auth off (diagnostic)", {"basicAuth": False}, {}),
    ("4x1, basic-auth off (diagnostic)", {"basicAuth": False, "workers": 4, "threads": 1}, POOL_FOR_1_THREAD),
)


def candidate_config(folder: Path, server: dict, database: dict) -> StackConfig:
    """A tuning candidate's configuration, validated like any stack file."""
    folder.mkdir(parents=True, exist_ok=True)
    return load_stack_file(bench_stack(folder, server, database)).config


def parse_overrides(values: list[str]) -> dict:
    """``key=value`` pairs (camelCase stack keys) with YAML typing: ``workers=2``, ``workerClass=sync``."""
    out = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--server/--database takes key=value (a stack key), got {item!r}")
        out[key] = yaml.safe_load(raw)
    return out


def _redact(argv: list[str]) -> list[str]:
    return [re.sub(r"//([^:/@]+):[^@]+@", r"//\1:***@", a) for a in argv]
