"""MLflow 3's GenAI surface through the platform: SDK tracing, OTLP ingestion from another
OpenTelemetry SDK, the prompt registry, logged models, and a signed registry webhook."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from .target import Target


def _eventually(find, timeout: float = 20.0):
    """Trace export and webhook delivery are asynchronous: poll until ``find`` returns something."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = find()
        if found:
            return found
        time.sleep(0.5)
    return find()


def test_sdk_traces_with_nested_spans_are_searchable(client: MlflowClient, experiment_id: str, target: Target) -> None:
    mlflow.set_experiment(experiment_id=experiment_id)

    @mlflow.trace(name="retrieve")
    def retrieve(query: str) -> list[str]:
        return [query.upper()]

    @mlflow.trace(name="answer")
    def answer(query: str) -> str:
        return " ".join(retrieve(query))

    marker = f"smoke-{target.session_id}"
    assert answer(marker) == marker.upper()
    mlflow.flush_trace_async_logging()

    def found():
        traces = client.search_traces(locations=[experiment_id], max_results=50)
        return [t for t in traces if any(s.name == "answer" and marker in str(s.inputs) for s in t.data.spans)]

    traces = _eventually(found)
    assert traces, "the traced call never appeared in search_traces"
    spans = {s.name: s for s in traces[0].data.spans}
    assert set(spans) == {"answer", "retrieve"}
    assert spans["retrieve"].parent_id == spans["answer"].span_id


def test_otlp_export_from_the_opentelemetry_sdk(client: MlflowClient, experiment_id: str, target: Target) -> None:
    """What a collector or a service in another language does: OTLP/HTTP protobuf to /v1/traces with
    the basic-auth header and the experiment in x-mlflow-experiment-id."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    token = base64.b64encode(f"{target.username}:{target.password}".encode()).decode()
    exporter = OTLPSpanExporter(
        endpoint=target.url("/v1/traces"),
        headers={"Authorization": f"Basic {token}", "x-mlflow-experiment-id": experiment_id},
        certificate_file=target.verify if isinstance(target.verify, str) else None,
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "smoke-otlp"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    name = f"otlp-{target.session_id}"
    with (
        provider.get_tracer("smoke").start_as_current_span(name),
        provider.get_tracer("smoke").start_as_current_span("otlp-child"),
    ):
        pass
    provider.shutdown()

    def found():
        traces = client.search_traces(locations=[experiment_id], max_results=50)
        return [t for t in traces if any(s.name == name for s in t.data.spans)]

    traces = _eventually(found)
    assert traces, "the OTLP export never appeared as a trace"
    assert {s.name for s in traces[0].data.spans} == {name, "otlp-child"}


def test_otlp_without_credentials_is_refused(target: Target, experiment_id: str) -> None:
    response = target.http(auth=False).post(
        target.url("/v1/traces"), data=b"", headers={"x-mlflow-experiment-id": experiment_id}, timeout=10
    )
    assert response.status_code == 401


def test_prompt_registry_register_alias_and_load(target: Target) -> None:
    name = f"smoke-prompt-{target.session_id}"
    first = mlflow.genai.register_prompt(name=name, template="Summarise {{text}} in one line.")
    second = mlflow.genai.register_prompt(name=name, template="Summarise {{text}} in {{n}} words.")
    mlflow.genai.set_prompt_alias(name, alias="production", version=first.version)
    loaded = mlflow.genai.load_prompt(f"prompts:/{name}@production", cache_ttl_seconds=0)
    assert loaded.version == first.version and loaded.format(text="x") == "Summarise x in one line."
    mlflow.genai.set_prompt_alias(name, alias="production", version=second.version)
    promoted = mlflow.genai.load_prompt(f"prompts:/{name}@production", cache_ttl_seconds=0)
    assert promoted.format(text="x", n=5) == "Summarise x in 5 words."


def test_search_logged_models_finds_the_ones_logged(client: MlflowClient, experiment_id: str, target: Target) -> None:
    names = [f"smoke-model-{target.session_id}-{i}" for i in range(2)]
    for i, name in enumerate(names):
        model = mlflow.initialize_logged_model(name=name, experiment_id=experiment_id, params={"i": str(i)})
        mlflow.finalize_logged_model(model.model_id, "READY")
    found = mlflow.search_logged_models(
        experiment_ids=[experiment_id],
        filter_string=f"name LIKE 'smoke-model-{target.session_id}-%'",
        output_format="list",
    )
    assert sorted(m.name for m in found) == names


class _Receiver:
    """An HTTP endpoint the server delivers webhooks to; records each delivery."""

    def __init__(self, host: str):
        self.deliveries: list[tuple[dict, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.deliveries.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_port}/mlflow-events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver(target: Target, pytestconfig: pytest.Config):
    host = pytestconfig.getoption("webhook_host")
    if not host:
        if urlparse(target.uri).hostname not in ("127.0.0.1", "localhost"):
            pytest.skip("a remote server cannot reach this machine: pass --webhook-host <address it can reach>")
        host = "127.0.0.1"
    found = _Receiver(host)
    yield found
    found.close()


def test_registry_webhook_delivers_a_signed_event(client: MlflowClient, target: Target, receiver: _Receiver) -> None:
    """MLflow >= 3.3 webhooks: a model created in the registry reaches the receiver, signed with the
    webhook's secret (HMAC-SHA256 over delivery id, timestamp and payload)."""
    secret = hashlib.sha256(target.session_id.encode()).hexdigest()
    try:
        hook = client.create_webhook(
            name=f"smoke-{target.session_id}", url=receiver.url, events=["registered_model.created"], secret=secret
        )
    except MlflowException as exc:
        pytest.fail(f"the server refused the webhook {receiver.url}: {exc.message.splitlines()[0]}")
    prefix = f"smoke-webhook-{target.session_id}"
    created: list[str] = []
    try:
        deliveries = _deliver(client, receiver, prefix, created)
        assert deliveries, f"no webhook delivery arrived within {WEBHOOK_WAIT_S} s"
        headers, body = deliveries[0]
        signed = f"{headers['x-mlflow-delivery-id']}.{headers['x-mlflow-timestamp']}.{body.decode()}"
        expected = base64.b64encode(hmac.new(secret.encode(), signed.encode(), hashlib.sha256).digest()).decode()
        assert headers["x-mlflow-signature"] == f"v1,{expected}"
        event = json.loads(body)
        assert (event["entity"], event["action"]) == ("registered_model", "created")
        assert event["data"]["name"] in created
    finally:
        client.delete_webhook(hook.webhook_id)
        for model in created:
            with contextlib.suppress(MlflowException):
                client.delete_registered_model(model)


#: Each server worker caches the webhook list for MLFLOW_WEBHOOK_CACHE_TTL (60 s by default), so a
#: new webhook fires on a worker only once that worker's cache expires.
WEBHOOK_WAIT_S = 90


def _deliver(client: MlflowClient, receiver: _Receiver, prefix: str, created: list[str]) -> list:
    """Create a registered model every few seconds until the receiver has a delivery for one."""
    deadline = time.monotonic() + WEBHOOK_WAIT_S
    while time.monotonic() < deadline:
        created.append(f"{prefix}-{len(created)}")
        client.create_registered_model(created[-1])
        arrived = _eventually(
            lambda: [d for d in receiver.deliveries if any(m.encode() in d[1] for m in created)], timeout=5
        )
        if arrived:
            return arrived
    return []
