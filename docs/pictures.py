"""The docs' pictures, regenerated from the repository so they stay true (`make docs`):

- ``architecture.png``: the AWS resources one stack creates (the `diagrams` package + Graphviz);
- ``alias-lifecycle.svg``: the aliases a model version moves through (Graphviz);
- ``bench-throughput.png``, ``bench-p95.png``: the load benchmark's JSON as charts (matplotlib;
  `make bench` redraws them after a run);
- ``ui-promoted-version.png``: MLflow's UI on a throwaway local platform, showing a version that
  `promote` put behind ``@champion`` with its gate tags (headless Chromium);
- ``local-prometheus.png``: the local Prometheus's graph of request rate by route group during a
  short load run on a throwaway platform (headless Chromium);
- ``bench-auth-gate.png``: the auth-on against stock gate (benchmarks/results/auth_gate.json);
- ``bench-scale.png``: the data-scale benchmark's p95 per operation against the number of runs,
  MLflow's schema against the tuned one (benchmarks/results/data_scale_*.json; `make bench-scale`).

Usage: python docs/pictures.py [architecture] [aliases] [charts] [screenshot] [prometheus] [auth-gate] [scale]
(default: all)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "images"
RESULTS = ROOT / "benchmarks" / "results" / "tracking_load.json"


def architecture(out: Path = IMAGES) -> Path:
    from diagrams import Cluster, Diagram, Edge
    from diagrams.aws.compute import ECR
    from diagrams.aws.database import Dynamodb, RDSPostgresqlInstance
    from diagrams.aws.integration import SNS
    from diagrams.aws.management import CloudwatchAlarm
    from diagrams.aws.network import ALB, Route53
    from diagrams.aws.security import IAMRole, SecretsManager
    from diagrams.aws.storage import S3
    from diagrams.k8s.compute import Cronjob, Job, Pod
    from diagrams.onprem.client import Users
    from diagrams.onprem.vcs import Github

    target = out / "architecture"
    graph = {"fontsize": "13", "pad": "0.3", "nodesep": "0.5", "ranksep": "0.8"}
    with Diagram("", filename=str(target), outformat="png", show=False, direction="LR", graph_attr=graph):
        people = Users("ML teams\n(browser, mlflow client)")
        github = Github("GitHub Actions\n(OIDC: preview, deploy,\npromote roles)")
        dns = Route53("Route 53 + ACM")
        with Cluster("VPC"):
            with Cluster("public subnets"):
                alb = ALB("ALB: HTTPS only\n(SSO login on\nbrowser paths)")
            with Cluster("private subnets: EKS, namespace mlflow"):
                server = Pod("mlflow server\n(gunicorn, HPA)")
                jobs = Job("migration, release,\nteams sync Jobs")
                runbooks = Cronjob("runbook CronJobs\n(reap, cleanup, gc)")
            database = RDSPostgresqlInstance("RDS PostgreSQL\n(tracking + auth DBs)")
        bucket = S3("S3 artifacts\n(KMS, lifecycle)")
        secrets = SecretsManager("Secrets Manager\n(admin, DB, team users)")
        irsa = IAMRole("IRSA roles\n(boundary-limited)")
        alarms = CloudwatchAlarm("CloudWatch alarms")
        topic = SNS("SNS → on-call")
        lock = Dynamodb("DynamoDB\npromotion lock")
        image = ECR("ECR image")
        people >> dns >> alb >> server
        server >> database
        jobs >> database
        runbooks >> server
        server >> Edge(label="via IRSA") >> bucket
        irsa - Edge(style="dashed") - server
        server - Edge(style="dashed") - secrets
        alarms >> topic
        alb - Edge(style="dotted") - alarms
        database - Edge(style="dotted") - alarms
        github >> Edge(label="pulumi up") >> image
        github >> Edge(label="promote") >> lock
    return target.with_suffix(".png")


def aliases(out: Path = IMAGES) -> Path:
    import graphviz

    dot = graphviz.Digraph("aliases", format="svg", graph_attr={"rankdir": "LR", "fontname": "Helvetica"})
    dot.attr("node", shape="box", style="rounded,filled", fillcolor="#eef3fb", fontname="Helvetica")
    dot.attr("edge", fontname="Helvetica", fontsize="10")
    dot.node("trained", "registered version\n(training job)", fillcolor="#ffffff")
    for alias in ("challenger", "champion", "previous-champion", "rolled-back"):
        dot.node(alias, f"@{alias}")
    dot.edge("trained", "challenger", "training sets it")
    dot.edge("challenger", "champion", "promote: gate passes\n(under the lock; approval tags)")
    dot.edge("champion", "previous-champion", "a newer version\nis promoted")
    dot.edge("champion", "rolled-back", "rollback --reason")
    dot.edge("previous-champion", "champion", "rollback restores it")
    target = out / "alias-lifecycle"
    dot.render(str(target), cleanup=True)
    return target.with_suffix(".svg")


def charts(out: Path = IMAGES, results: Path = RESULTS) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = json.loads(results.read_text())
    variants = report["variants"]
    operations = sorted({r["operation"] for v in variants.values() for r in v["results"]})
    written = [_throughput_chart(plt, report, variants, operations, out)]
    written.append(_p95_chart(plt, report, variants, operations, out))
    return written


AUTH_GATE = ROOT / "benchmarks" / "results" / "auth_gate.json"


def auth_gate(out: Path = IMAGES, results: Path = AUTH_GATE) -> Path:
    """Issue 28's gate: the rendered config (auth on) against stock MLflow (no auth), every round's
    throughput at 32 clients as a dot and the mean as a bar, from one interleaved run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = json.loads(results.read_text())
    rounds = {"stock": [], "rendered": []}
    for key, variant in report["variants"].items():
        rounds[key.split(" ", 1)[0]].append(variant)
    operations = sorted({r["operation"] for v in report["variants"].values() for r in v["results"]})
    figure, axis = plt.subplots(figsize=(10, 4.4))
    for i, (name, label) in enumerate((("stock", "stock, no auth"), ("rendered", "rendered, auth on"))):
        for x, operation in enumerate(operations):
            values = [_cell(v, operation, 32, "throughput_per_s") for v in rounds[name]]
            axis.bar(x + i * 0.4, sum(values) / len(values), 0.4, color=f"C{i}", label=label if x == 0 else None)
            axis.scatter([x + i * 0.4] * len(values), values, color="black", s=8, zorder=3)
    axis.set_xticks([x + 0.2 for x in range(len(operations))], operations)
    axis.set_ylabel("requests/s at 32 clients")
    axis.set_title(f"Auth on against stock MLflow without auth ({report['date'][:10]}, {len(rounds['stock'])} rounds)")
    axis.legend(fontsize=8)
    return _save(plt, figure, out / "bench-auth-gate.png")


SCALE_RESULTS = ROOT / "benchmarks" / "results"


def scale(out: Path = IMAGES, results: Path = SCALE_RESULTS) -> Path:
    """p95 of each operation against the database's size (one point per data_scale_*.json), for
    MLflow's own schema and after `db tune`, at 1 and 8 clients."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reports = sorted(
        (json.loads(path.read_text()) for path in results.glob("data_scale_*.json")),
        key=lambda r: r["build"]["size"]["runs"],
    )
    if not reports:
        raise SystemExit(f"no data_scale_*.json in {results}: run `make bench-scale` first")
    operations = [r["operation"] for r in reports[-1]["tuned"]["levels"] if r["clients"] == 1]
    figure, axes = plt.subplots(3, (len(operations) + 2) // 3, figsize=(14, 9), sharex=True)
    runs = [r["build"]["size"]["runs"] for r in reports]
    for axis, operation in zip(axes.flat, operations, strict=False):
        for phase, style in (("mlflow", "--"), ("tuned", "-")):
            for clients, color in ((1, "C0"), (8, "C3")):
                p95 = [_level(r[phase], operation, clients) for r in reports]
                marker = "x" if phase == "mlflow" else "o"
                axis.plot(runs, p95, style, color=color, marker=marker, label=f"{phase}, {clients} client(s)")
        axis.set_title(operation, fontsize=9)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_ylabel("p95 ms")
    for axis in axes.flat[len(operations) :]:
        axis.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    figure.supxlabel("runs in the database (metric rows: about 100 per run)")
    figure.suptitle("p95 through the server with auth, MLflow's schema (dashed) against `db tune` (solid)")
    return _save(plt, figure, out / "bench-scale.png")


def _level(phase: dict, operation: str, clients: int) -> float:
    return next(
        (r["p95_ms"] for r in phase["levels"] if r["operation"] == operation and r["clients"] == clients),
        float("nan"),
    )


def _save(plt, figure, target: Path) -> Path:
    figure.tight_layout()
    figure.savefig(target, dpi=110)
    plt.close(figure)
    return target


def _cell(variant: dict, operation: str, clients: int, key: str) -> float:
    return next((r[key] for r in variant["results"] if r["operation"] == operation and r["clients"] == clients), 0.0)


def _throughput_chart(plt, report: dict, variants: dict, operations: list[str], out: Path) -> Path:
    figure, axis = plt.subplots(figsize=(11, 4.8))
    width = 0.8 / len(variants)
    for i, variant in enumerate(variants.values()):
        values = [_cell(variant, op, 32, "throughput_per_s") for op in operations]
        positions = [x + i * width for x in range(len(operations))]
        axis.bar(positions, values, width, label=variant["label"].replace("`", ""))
    axis.set_xticks([x + width * (len(variants) - 1) / 2 for x in range(len(operations))], operations)
    axis.set_ylabel("requests/s at 32 clients")
    axis.set_title(f"Throughput per server and operation ({report['date'][:10]}, one machine, 2 cores)")
    axis.legend(fontsize=8)
    return _save(plt, figure, out / "bench-throughput.png")


def _p95_chart(plt, report: dict, variants: dict, operations: list[str], out: Path) -> Path:
    figure, axes = plt.subplots(2, (len(operations) + 1) // 2, figsize=(12, 6.5), sharex=True)
    for axis, operation in zip(axes.flat, operations, strict=False):
        for variant in variants.values():
            levels = report["levels"]
            axis.plot(
                levels, [_cell(variant, operation, c, "p95_ms") for c in levels], marker="o", label=variant["label"]
            )
        axis.set_title(operation, fontsize=10)
        axis.set_xscale("log", base=2)
        axis.set_xticks(report["levels"], [str(c) for c in report["levels"]])
        axis.set_ylabel("p95 ms")
    axes.flat[0].legend(fontsize=7)
    figure.supxlabel("concurrent clients")
    figure.suptitle(f"p95 latency against client count ({report['date'][:10]})")
    return _save(plt, figure, out / "bench-p95.png")


def screenshot(out: Path = IMAGES) -> Path:
    """A throwaway platform, the worked example's two promotions, and the champion's version page."""
    sys.path.insert(0, str(ROOT / "src"))
    from mlflow_platform.local.platform import LocalPlatform, Ports
    from mlflow_platform.ui_browser import headless_chromium

    work = Path(tempfile.mkdtemp(prefix="mlflow-platform-docs-"))
    platform = LocalPlatform(state_dir=work / "state", stack_file=ROOT / "stacks" / "local.yaml")
    platform.up(Ports.free(), log=lambda _: None)
    try:
        env = {**platform.client_env(), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(work)}
        cli = [str(Path(sys.executable).parent / "mlflow-platform")]
        gate = ["search-ranker", "--metric", "val_ndcg_at_10", "--threshold", "0.80", "--lock", "local"]
        env["MLFLOW_PLATFORM_STATE_DIR"] = str(platform.state_dir)
        for score in ("0.83", "0.86"):
            subprocess.run([sys.executable, str(ROOT / "docs/examples/train_ranker.py"), score], env=env, check=True)
            subprocess.run([*cli, "promote", *gate, "--approved-by", "ana"], env=env, check=True)
        header = platform.alb.header("ana@example.com", ("search-engineers", "mlflow-admins"))
        with headless_chromium({"x-amzn-oidc-data": header}) as browser:
            browser.get(platform.tracking_uri())  # the UI keeps the chosen workspace in localStorage
            browser.driver.execute_script("window.localStorage.setItem('mlflow.activeWorkspace', 'default')")
            browser.get(f"{platform.tracking_uri()}/#/models/search-ranker/versions/2")
            browser.wait_for_text("approved_by")
            target = out / "ui-promoted-version.png"
            browser.screenshot(str(target))
        return target
    finally:
        platform.down(purge=True, log=lambda _: None)


def _short_load(platform, seconds: float) -> None:
    """A few clients logging, searching and uploading for ``seconds`` (the picture's traffic)."""
    import threading
    import time

    import mlflow

    env = platform.client_env()
    os.environ.update({k: v for k, v in env.items() if k.startswith("MLFLOW_TRACKING_")})
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.create_experiment(f"prometheus-picture-{int(time.time())}")
    deadline = time.monotonic() + seconds

    def worker(n: int) -> None:
        run = client.create_run(experiment).info.run_id
        scratch = Path(tempfile.mkdtemp()) / "weights.bin"
        scratch.write_bytes(b"w" * 65536)
        step = 0
        while time.monotonic() < deadline:
            client.log_metric(run, "loss", 1.0 / (step + 1), step=step)
            if step % 5 == 0:
                client.search_runs([experiment], max_results=10)
            if step % 20 == 0:
                client.log_artifact(run, str(scratch))
            step += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def prometheus(out: Path = IMAGES) -> Path:
    """A throwaway platform with its Prometheus, a short load run, and Prometheus's own graph."""
    import time
    import urllib.parse

    sys.path.insert(0, str(ROOT / "src"))
    from mlflow_platform.local.platform import LocalPlatform, Ports
    from mlflow_platform.ui_browser import headless_chromium

    work = Path(tempfile.mkdtemp(prefix="mlflow-platform-docs-"))
    platform = LocalPlatform(state_dir=work / "state", stack_file=ROOT / "stacks" / "local.yaml")
    platform.up(Ports.free(), log=lambda _: None, prometheus=True)
    try:
        _short_load(platform, seconds=90)
        time.sleep(6)  # one more scrape
        query = urllib.parse.urlencode(
            {
                "g0.expr": "sum by (group) (rate(mlflow_platform_requests_total[30s]))",
                "g0.tab": "0",
                "g0.range_input": "2m",
            }
        )
        with headless_chromium() as browser:
            browser.get(f"{platform.prometheus().url}/graph?{query}")
            browser.wait_for_text("tracking-write")
            time.sleep(2)  # the chart draws after the legend
            target = out / "local-prometheus.png"
            browser.screenshot(str(target), height=1150)  # the legend sits under the chart
        return target
    finally:
        platform.down(purge=True, log=lambda _: None)


STEPS = {
    "architecture": architecture,
    "aliases": aliases,
    "charts": charts,
    "screenshot": screenshot,
    "prometheus": prometheus,
    "auth-gate": auth_gate,
    "scale": scale,
}

if __name__ == "__main__":
    IMAGES.mkdir(parents=True, exist_ok=True)
    for name in sys.argv[1:] or list(STEPS):
        if name not in STEPS:
            sys.exit(f"unknown picture {name!r}; choose from {', '.join(STEPS)}")
        made = STEPS[name]()
        for path in made if isinstance(made, list) else [made]:
            print(f"wrote {path.relative_to(ROOT)}")
