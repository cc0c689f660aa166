"""The on-call dashboard, built with grafana-foundation-sdk and rendered to JSON under version
control (``observability/grafana-dashboard.json``; ``python -m mlflow_platform.grafana --write``).

Why grafana-foundation-sdk over grafanalib: Grafana Labs generates it from Grafana's own schemas,
so a panel or field Grafana drops fails to build here. grafanalib is hand-written and its last
release is from January 2024.

Every query reads the edge's metrics (``observability.py``) or MLflow's own, by the names
``/metrics`` serves. A test parses each with promtool and checks each name against a live scrape."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

DASHBOARD_FILE = "observability/grafana-dashboard.json"
SOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
#: Grouped by route group: tracking writes and reads, searches, the registry, artifacts, OTLP.
BY_GROUP = "sum by (group) "

#: (title, unit, [(query, legend)], what it tells on-call)
PANELS: tuple[tuple[str, str, list[tuple[str, str]], str], ...] = (
    ("Requests by route group", "reqps",
     [(BY_GROUP + "(rate(mlflow_platform_requests_total[5m]))", "{{group}}")],
     "Traffic per part of the API; a group that drops to zero while others run is broken."),
    ("p95 latency by route group", "s",
     [("histogram_quantile(0.95, sum by (group, le) (rate(mlflow_platform_request_duration_seconds_bucket[5m])))",
       "{{group}}")],
     "The guide's target is 500 ms for everything but artifacts and OTLP, whose time grows with size."),
    ("Errors by status", "reqps",
     [('sum by (status) (rate(mlflow_platform_requests_total{status=~"[45].."}[5m]))', "{{status}}")],
     "5xx is the server's fault; a 4xx wave is usually a client or a login problem."),
    ("Workers busy", "percentunit",
     [("sum(mlflow_platform_requests_in_flight) / sum(mlflow_platform_worker_threads)", "busy threads")],
     "Near 1 the server queues requests: add replicas (server.replicas/maxReplicas) or workers."),
    ("Artifact bytes through the proxy", "Bps",
     [("sum by (direction) (rate(mlflow_platform_artifact_bytes_total[5m]))", "{{direction}}")],
     "Uploads and downloads the server carries; large and steady means the proxy is the bottleneck."),
    ("Refused logins and routes", "reqps",
     [("sum by (reason) (rate(mlflow_platform_auth_failures_total[5m]))", "{{reason}}")],
     "401s are wrong or missing credentials; 403s are signed-in users asking for what they may not."),
    ("Permission cache hit rate", "percentunit",
     [('sum(rate(mlflow_platform_permission_cache_total{result="hit"}[5m]))'
       " / sum(rate(mlflow_platform_permission_cache_total[5m]))", "hits")],
     "Auth-store reads answered without the database; low means grants change often or the TTL is short."),
    ("Requests MLflow counted", "reqps",
     [("sum by (status) (rate(mlflow_http_request_total[5m]))", "{{status}}")],
     "MLflow's own exporter, after the edge: the gap to the edge's count is what the edge refused."),
)  # fmt: skip


def build() -> dict:
    board = (
        dashboard.Dashboard("MLflow platform")
        .uid("mlflow-platform")
        .description("Traffic, latency, errors, saturation and artifacts of the MLflow tracking server")
        .tags(["mlflow", "mlflow-platform"])
        .time("now-3h", "now")
        .refresh("1m")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
    )
    for title, unit, queries, meaning in PANELS:
        panel = timeseries.Panel().title(title).description(meaning).unit(unit).datasource(SOURCE).span(12).height(8)
        for ref, (query, legend) in zip("ABCDEFGH", queries, strict=False):
            panel = panel.with_target(prometheus.Dataquery().expr(query).legend_format(legend).ref_id(ref))
        board = board.with_panel(panel)
    return json.loads(json.dumps(board.build(), cls=JSONEncoder))


def queries(document: dict) -> list[str]:
    return [target["expr"] for panel in document["panels"] for target in panel.get("targets", [])]


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # pragma: no cover
    if "--write" in sys.argv:
        Path(DASHBOARD_FILE).write_text(render())
        print(f"wrote {DASHBOARD_FILE}")
    else:
        print(render(), end="")
