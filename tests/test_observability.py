"""The edge's metrics in-process (each request counted by route group and status, timed until its
body is sent, refused logins counted, requests in flight back to zero, artifact bytes summed); the
Grafana dashboard's queries through promtool's parser; and every metric the dashboard and the alert
rules read, found in a scrape of the running server."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
import yaml
from prometheus_client import CollectorRegistry

from mlflow_platform import alerting, grafana, observability
from mlflow_platform.config import load_stack_file
from mlflow_platform.team_passwords import PasswordFile

from .paths import ROOT


class Routes:
    """Two routes of the real table's shape; anything else is unmatched."""

    TEMPLATES = {
        "/api/2.0/mlflow/runs/log-batch": "/api/2.0/mlflow/runs/log-batch",
        "/api/2.0/mlflow-artifacts/artifacts/a.bin": "/api/2.0/mlflow-artifacts/artifacts/<path:artifact_path>",
    }

    def lookup(self, method, path):
        template = self.TEMPLATES.get(path)
        return SimpleNamespace(template=template) if template else None


def _app(status: str, body: list[bytes], headers=()):
    def app(environ, start_response):
        start_response(status, [("Content-Type", "text/plain"), *headers])
        return body

    return app


def _value(registry: CollectorRegistry, name: str, **labels) -> float:
    return registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def _call(app, method: str, path: str, **environ) -> bytes:
    response = app({"REQUEST_METHOD": method, "PATH_INFO": path, **environ}, lambda status, headers, exc=None: None)
    try:
        return b"".join(response)
    finally:
        response.close()


def test_requests_are_counted_by_group_and_status_and_timed(registry) -> None:
    app = observability.metered(_app("200 OK", [b"ok"]), Routes(), threads=2, registry=registry)
    for _ in range(3):
        _call(app, "POST", "/api/2.0/mlflow/runs/log-batch")
    assert _value(registry, "mlflow_platform_requests_total", group="tracking-write", status="200") == 3
    assert _value(registry, "mlflow_platform_request_duration_seconds_count", group="tracking-write") == 3
    assert _value(registry, "mlflow_platform_requests_in_flight") == 0
    assert _value(registry, "mlflow_platform_worker_threads") == 2
    _call(app, "GET", "/nowhere")
    assert _value(registry, "mlflow_platform_requests_total", group="unmatched", status="200") == 1


def test_a_request_is_in_flight_until_its_body_is_sent(registry) -> None:
    app = observability.metered(_app("200 OK", [b"a", b"b"]), Routes(), threads=2, registry=registry)
    response = app({"REQUEST_METHOD": "POST", "PATH_INFO": "/api/2.0/mlflow/runs/log-batch"}, lambda *a: None)
    assert _value(registry, "mlflow_platform_requests_in_flight") == 1
    assert list(response) == [b"a", b"b"]
    response.close()
    assert _value(registry, "mlflow_platform_requests_in_flight") == 0


def test_refusals_count_as_auth_failures() -> None:
    for status, reason in (("401 Unauthorized", "unauthenticated"), ("403 Forbidden", "forbidden")):
        registry = CollectorRegistry()
        refused = observability.metered(_app(status, [b"no"]), Routes(), threads=1, registry=registry)
        _call(refused, "POST", "/api/2.0/mlflow/runs/log-batch")
        assert _value(registry, "mlflow_platform_auth_failures_total", reason=reason) == 1


def test_artifact_bytes_are_summed_each_way(registry) -> None:
    upload = observability.metered(_app("200 OK", [b""]), Routes(), threads=1, registry=registry)
    _call(upload, "PUT", "/api/2.0/mlflow-artifacts/artifacts/a.bin", CONTENT_LENGTH="1048576")
    assert _value(registry, "mlflow_platform_artifact_bytes_total", direction="upload") == 1048576
    other = CollectorRegistry()
    download = observability.metered(
        _app("200 OK", [b"x" * 10], (("Content-Length", "10"),)), Routes(), threads=1, registry=other
    )
    assert _call(download, "GET", "/api/2.0/mlflow-artifacts/artifacts/a.bin") == b"x" * 10
    assert _value(other, "mlflow_platform_artifact_bytes_total", direction="download") == 10
    # a client that hangs up after the first chunk: the bytes sent count, not the header's promise
    hung = CollectorRegistry()
    big = observability.metered(
        _app("200 OK", [b"y" * 100, b"y" * 10**6], (("Content-Length", str(10**6 + 100)),)), Routes(), 1, hung
    )
    response = big({"REQUEST_METHOD": "GET", "PATH_INFO": "/api/2.0/mlflow-artifacts/artifacts/a.bin"}, lambda *a: None)
    next(iter(response))
    response.close()
    assert _value(hung, "mlflow_platform_artifact_bytes_total", direction="download") == 100


def test_an_app_that_raises_leaves_nothing_in_flight(registry) -> None:
    def broken(environ, start_response):
        raise RuntimeError("boom")

    app = observability.metered(broken, Routes(), threads=1, registry=registry)
    with pytest.raises(RuntimeError):
        _call(app, "GET", "/api/2.0/mlflow/runs/log-batch")
    assert _value(registry, "mlflow_platform_requests_in_flight") == 0


# --- the dashboard and the alert rules against Prometheus's parser and the live /metrics ----------

SEARCH = {"X-MLFLOW-WORKSPACE": "search"}
#: Metrics the rules read from elsewhere: kube-state-metrics and Prometheus itself.
NOT_THE_SERVERS = {"kube_pod_container_status_restarts_total", "up"}


def _names(expression: str) -> set[str]:
    """Metric names in a PromQL expression (identifiers followed by a selector or a range)."""
    return set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)(?=\{|\[)", expression)) - {"by"}


def _rule_expressions() -> list[str]:
    config = load_stack_file(ROOT / "stacks" / "Pulumi.prod.yaml").config
    return [r["expr"] for g in alerting.rules(config)["groups"] for r in g["rules"]]


def test_the_committed_dashboard_is_the_built_one() -> None:
    assert (ROOT / grafana.DASHBOARD_FILE).read_text() == grafana.render(), (
        "stale: run `python -m mlflow_platform.grafana --write`"
    )


def test_every_dashboard_query_parses_as_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (Debian), as .ci/run does"
    document = json.loads((ROOT / grafana.DASHBOARD_FILE).read_text())
    exprs = grafana.queries(document)
    assert len(exprs) == len(grafana.PANELS)
    recording = {
        "groups": [{"name": "dashboard", "rules": [{"record": f"q{i}", "expr": e} for i, e in enumerate(exprs)]}]
    }
    (tmp_path / "queries.yaml").write_text(yaml.safe_dump(recording))
    checked = subprocess.run([promtool, "check", "rules", "queries.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    (tmp_path / "broken.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "q", "expr": "sum(rate(x[5m]"}]}]})
    )
    assert (
        subprocess.run([promtool, "check", "rules", "broken.yaml"], cwd=tmp_path, capture_output=True).returncode != 0
    )


def test_every_metric_the_dashboard_and_rules_read_is_served(platform, monkeypatch, tmp_path: Path) -> None:
    """A scrape of the running server's /metrics, after traffic of every kind the panels draw."""
    import mlflow

    env = platform.client_env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    base, auth = env["MLFLOW_TRACKING_URI"], (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    requests.get(f"{base}/api/2.0/mlflow/experiments/search?max_results=1", auth=auth, timeout=10)
    requests.get(f"{base}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)  # a 401
    ana = ("ana", PasswordFile(platform.team_passwords_file).get("ana"))  # a permission check: the cache
    for _ in range(4):  # both workers
        requests.get(f"{base}/api/2.0/mlflow/experiments/search?max_results=1", auth=ana, headers=SEARCH, timeout=10)
    client = mlflow.MlflowClient(base)
    run = client.create_run(client.create_experiment(f"observability-{tmp_path.name}"))
    scratch = tmp_path / "observability-artifact.txt"
    scratch.write_text("bytes through the proxy")
    client.log_artifact(run.info.run_id, str(scratch))
    served = requests.get(f"{base}/metrics", auth=auth, timeout=10).text
    names = {
        line.split("{", 1)[0].split(" ", 1)[0] for line in served.splitlines() if line and not line.startswith("#")
    }
    document = json.loads((ROOT / grafana.DASHBOARD_FILE).read_text())
    wanted = set().union(*(_names(e) for e in grafana.queries(document) + _rule_expressions())) - NOT_THE_SERVERS
    assert wanted and wanted <= names, wanted - names
    assert re.search(r'mlflow_platform_auth_failures_total\{reason="unauthenticated"\} [1-9]', served)


def test_the_local_prometheus_scrapes_as_the_ops_user_and_evaluates_the_rules(platform) -> None:
    """`local up --with-prometheus` on the running platform, then `--without-prometheus`."""
    try:
        platform.up(log=lambda _: None, prometheus=True)
        prom = platform.prometheus()
        row = next(r for r in platform.status() if r.name == "prometheus")
        assert row.healthy and "scrape of the server: up" in row.detail and prom.url.startswith("http://127.0.0.1:")
        env = platform.client_env()
        admin = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
        ops = requests.get(
            f"{env['MLFLOW_TRACKING_URI']}/api/2.0/mlflow/users/get",
            params={"username": "mlflow-ops"},
            auth=admin,
            timeout=10,
        ).json()["user"]
        assert ops["is_admin"] is True
        seen = 0.0
        for _ in range(30):  # a scrape every 5 s
            answer = requests.get(
                f"{prom.url}/api/v1/query", params={"query": "sum(mlflow_platform_requests_total)"}, timeout=5
            )
            result = answer.json()["data"]["result"]
            seen = float(result[0]["value"][1]) if result else 0.0
            if seen > 0:
                break
            time.sleep(1)
        assert seen > 0, "Prometheus never saw the edge's request counter"
        loaded = requests.get(f"{prom.url}/api/v1/rules", timeout=5).json()["data"]["groups"]
        names = {r["name"] for g in loaded for r in g["rules"]}
        assert names == {r["alert"] for g in alerting.rules(platform.config)["groups"] for r in g["rules"]}
    finally:
        platform.up(log=lambda _: None, prometheus=False)
    assert "prometheus" not in {r.name for r in platform.status()}
    assert not platform.prometheus().ready()


def test_without_the_prometheus_binary_up_refuses_before_starting_anything(tmp_path: Path, monkeypatch) -> None:
    from mlflow_platform.errors import PlatformError
    from mlflow_platform.local import prometheus as local_prometheus
    from mlflow_platform.local.platform import LocalPlatform, Ports

    from .paths import LOCAL_STACK

    monkeypatch.setattr(local_prometheus.shutil, "which", lambda name: None)
    platform = LocalPlatform(state_dir=tmp_path / "state", stack_file=LOCAL_STACK)
    with pytest.raises(PlatformError, match="apt-get install prometheus"):
        platform.up(Ports.free(), log=lambda _: None, prometheus=True)
    assert not (tmp_path / "state" / "postgres").exists()  # nothing was started


def test_a_recycled_workers_live_gauges_stop_counting(tmp_path: Path, monkeypatch) -> None:
    """gunicorn calls `child_exit` for every worker that exits (--max-requests recycles them); the
    rendered config loads it, and it removes that worker's live-sum gauge files."""
    import gunicorn.config

    from mlflow_platform import gunicorn_hooks, server_spec
    from mlflow_platform.config import load_stack_file

    from .paths import LOCAL_STACK

    options = server_spec.gunicorn_options(load_stack_file(LOCAL_STACK).config)
    assert f"--config=python:{server_spec.GUNICORN_HOOKS}" in options
    assert "child_exit" in {setting.name for setting in gunicorn.config.KNOWN_SETTINGS}
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    for kind in ("gauge_livesum_4242.db", "gauge_liveall_4242.db", "gauge_livesum_7.db"):
        (tmp_path / kind).write_bytes(b"")
    gunicorn_hooks.child_exit(None, SimpleNamespace(pid=4242))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gauge_livesum_7.db"]
