"""What a training client does to the tracking server, as REST calls the MLflow client makes.

Raw REST rather than ``MlflowClient`` so that the driver measures the server, not the client
library's retries and thread pools; the payloads are the ones ``MlflowClient`` sends.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from .loadgen import Client, Operation

METRICS_PER_BATCH = 20
PARAMS_PER_BATCH = 3
TAGS_PER_BATCH = 2
ARTIFACT_BYTES = 4096
SEARCH_FILTER = "tags.team = 'vision'"
SEARCH_PAGE = 100
SPANS_PER_EXPORT = 10


@dataclass(frozen=True)
class Fixture:
    """What the operations work on; created before any timing starts."""

    training_experiment_id: str
    #: Replaced with fresh runs before each measured level (see ``tracking_load.fresh_runs``):
    #: every ``get_run`` — the server's and the auth layer's — loads a run's params and tags,
    #: so runs that grew under an earlier variant would make a later one look slower.
    run_ids: list[str]
    search_experiment_id: str
    model_name: str
    alias: str = "champion"

    @property
    def probe_path(self) -> str:
        """A cheap authenticated read that needs a database connection."""
        return f"/api/2.0/mlflow/experiments/get?experiment_id={self.training_experiment_id}"

    def run_for(self, client: Client) -> str:
        return self.run_ids[client.index % len(self.run_ids)]


def _now_ms() -> int:
    return int(time.time() * 1000)


def otlp_export(seq: int, token: str, index: int) -> bytes:
    """One OTLP/HTTP protobuf export, as an OpenTelemetry SDK sends it: one trace of
    SPANS_PER_EXPORT spans (a root and its children), ids unique per call."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    resource.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="bench")))
    scope = resource.scope_spans.add()
    trace_id = hashlib.sha256(f"{token}-{index}-{seq}".encode()).digest()[:16]
    start = time.time_ns()
    for k in range(SPANS_PER_EXPORT):
        span = scope.spans.add()
        span.trace_id = trace_id
        span.span_id = hashlib.sha256(trace_id + bytes([k])).digest()[:8]
        if k:
            span.parent_span_id = scope.spans[0].span_id
        span.name = "predict" if k == 0 else f"step_{k}"
        span.start_time_unix_nano = start + k * 1000
        span.end_time_unix_nano = start + 1_000_000
    return request.SerializeToString()


def operations(fx: Fixture) -> list[Operation]:
    async def log_batch(c: Client) -> None:
        ts, step = _now_ms(), c.seq
        await c.call(
            "POST",
            "/api/2.0/mlflow/runs/log-batch",
            json={
                "run_id": fx.run_for(c),
                "metrics": [
                    {"key": f"train/metric_{k}", "value": 1.0 / (step + k + 1), "timestamp": ts, "step": step}
                    for k in range(METRICS_PER_BATCH)
                ],
                # Params are immutable: a key per call (a real job logs each once, at start).
                "params": [
                    {"key": f"hp_{c.token}_{c.index}_{step}_{k}", "value": "0.001"} for k in range(PARAMS_PER_BATCH)
                ],
                "tags": [{"key": "epoch", "value": str(step)}, {"key": "phase", "value": "train"}],
            },
        )

    async def log_metric(c: Client) -> None:
        await c.call(
            "POST",
            "/api/2.0/mlflow/runs/log-metric",
            json={
                "run_id": fx.run_for(c),
                "key": "loss",
                "value": 1.0 / c.seq,
                "timestamp": _now_ms(),
                "step": c.seq,
            },
        )

    payload = b"x" * ARTIFACT_BYTES

    async def artifact_round_trip(c: Client) -> None:
        path = (
            f"/api/2.0/mlflow-artifacts/artifacts/{fx.training_experiment_id}/{fx.run_for(c)}"
            f"/artifacts/bench/{c.token}-{c.index}-{c.seq}.bin"
        )
        await c.call("PUT", path, data=payload)
        body = await c.call("GET", path)
        if len(body) != ARTIFACT_BYTES:
            raise ValueError(f"downloaded {len(body)} bytes, uploaded {ARTIFACT_BYTES}")

    async def search_runs(c: Client) -> None:
        body = await c.call(
            "POST",
            "/api/2.0/mlflow/runs/search",
            json={
                "experiment_ids": [fx.search_experiment_id],
                "filter": SEARCH_FILTER,
                "max_results": SEARCH_PAGE,
            },
        )
        if body.count(b'"run_id"') < SEARCH_PAGE:
            raise ValueError("search returned fewer runs than a full page")

    async def model_by_alias(c: Client) -> None:
        await c.call(
            "GET", "/api/2.0/mlflow/registered-models/alias", params={"name": fx.model_name, "alias": fx.alias}
        )

    async def otlp_traces(c: Client) -> None:
        await c.call(
            "POST",
            "/v1/traces",
            data=otlp_export(c.seq, c.token, c.index),
            headers={"Content-Type": "application/x-protobuf", "x-mlflow-experiment-id": fx.training_experiment_id},
        )

    return [
        Operation("log-batch", True, log_batch, METRICS_PER_BATCH, "metrics"),
        Operation("log-metric", True, log_metric),
        Operation("artifact-put-get", True, artifact_round_trip),
        Operation("search-runs", False, search_runs),
        Operation("model-by-alias", False, model_by_alias),
        Operation("otlp-traces", True, otlp_traces, SPANS_PER_EXPORT, "spans"),
    ]
