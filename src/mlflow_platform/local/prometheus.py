"""An opt-in Prometheus beside the local platform (`local up --with-prometheus`). It scrapes the
tracking server's /metrics every 5 s as the `mlflow-ops` admin user, as the ServiceMonitor does
in a cluster, and evaluates the same alert rules (alerting.py). Its UI listens on loopback only.

The binary is Debian's `prometheus` package (or any `prometheus` on PATH). The ops user's password
is generated once and kept in the state dir, readable only by its owner; Prometheus reads it from
that file."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import requests
import yaml

from ..alerting import rules
from ..config import StackConfig
from ..errors import PlatformError
from ..files import private_dir, write_private

OPS_USER = "mlflow-ops"
SCRAPE_SECONDS = 5


def binary() -> str:
    found = shutil.which("prometheus")
    if not found:
        raise PlatformError(
            "the local Prometheus needs the `prometheus` binary: `apt-get install prometheus` (Debian) "
            "or put one on PATH; the platform runs without it when --with-prometheus is left out"
        )
    return found


class LocalPrometheus:
    def __init__(self, root: Path, port: int, tracking_port: int, config: StackConfig):
        self.root, self.port, self.tracking_port, self.config = root, port, tracking_port, config

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def password_file(self) -> Path:
        return self.root / "ops-password"

    def ops_password(self) -> str:
        if not self.password_file.exists():
            private_dir(self.root)
            write_private(self.password_file, secrets.token_urlsafe(24))
        return self.password_file.read_text().strip()

    def write_config(self) -> None:
        """The scrape job, labelled as the cluster's would be (namespace, service) so the same
        alert rules evaluate, and the rules themselves."""
        private_dir(self.root)
        write_private(self.root / "alerts.yml", yaml.safe_dump(rules(self.config), sort_keys=False))
        scrape = {
            "job_name": "mlflow",
            "scrape_interval": f"{SCRAPE_SECONDS}s",
            "metrics_path": "/metrics",
            "basic_auth": {"username": OPS_USER, "password_file": str(self.password_file)},
            "static_configs": [
                {
                    "targets": [f"127.0.0.1:{self.tracking_port}"],
                    "labels": {"namespace": self.config.namespace, "service": "mlflow", "pod": "local"},
                }
            ],
        }
        document = {
            "global": {"evaluation_interval": "15s"},
            "rule_files": [str(self.root / "alerts.yml")],
            "scrape_configs": [scrape],
        }
        write_private(self.root / "prometheus.yml", yaml.safe_dump(document, sort_keys=False))

    def argv(self) -> list[str]:
        return [
            binary(),
            f"--config.file={self.root / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.root / 'data'}",
            "--storage.tsdb.retention.time=2d",
            f"--web.listen-address=127.0.0.1:{self.port}",
            # Prometheus answers any origin by default: no other web page may read its API from a browser.
            f"--web.cors.origin=^http://127\\.0\\.0\\.1:{self.port}$",
        ]

    def ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def scrape_health(self) -> str:
        """What Prometheus says of its scrape of the tracking server."""
        try:
            targets = requests.get(f"{self.url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        except (requests.RequestException, ValueError, KeyError):
            return "unknown"
        return next((t.get("health", "unknown") for t in targets if t.get("labels", {}).get("job") == "mlflow"), "none")


def ensure_ops_user(tracking_uri: str, admin: tuple[str, str], password: str) -> None:
    """The scrape's user: an MLflow admin (/metrics is an admin route), through MLflow's basic-auth
    REST API; its password is set again on every start, so the file and the server agree."""
    base = f"{tracking_uri}/api/2.0/mlflow/users"
    found = requests.get(f"{base}/get", params={"username": OPS_USER}, auth=admin, timeout=10)
    if found.status_code == 404:
        created = requests.post(
            f"{base}/create", json={"username": OPS_USER, "password": password}, auth=admin, timeout=10
        )
        created.raise_for_status()
    else:
        found.raise_for_status()
        reset = requests.patch(f"{base}/update-password", json={"username": OPS_USER, "password": password},
                               auth=admin, timeout=10)  # fmt: skip
        reset.raise_for_status()
    promoted = requests.patch(
        f"{base}/update-admin", json={"username": OPS_USER, "is_admin": True}, auth=admin, timeout=10
    )
    promoted.raise_for_status()
