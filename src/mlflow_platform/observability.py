"""What on-call needs from the server, measured at the edge: MLflow's own exporter labels requests by
method and status only, so it cannot say which part of the API is slow or failing. The edge knows
each request's route. It adds:
- a route group, and the request's duration until its body is sent;
- refused logins;
- requests in flight against the threads that serve them (saturation);
- artifact bytes.

All of it lives in prometheus_client's multiprocess directory, next to MLflow's metrics, and the
same ``/metrics`` serves it (on only with ``server.prometheus``). The alert rules and the Grafana
dashboard (``observability/``) use these names, and a test holds them to what ``/metrics`` serves.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from .routes import Route

#: Request-duration buckets (seconds): the guide's 500 ms p95 target sits on a boundary.
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
GROUPS = ("tracking-write", "tracking-read", "search", "registry", "artifacts", "otlp", "gateway", "ui", "unmatched")
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
#: Rendered with ``server.prometheus``: the threads one worker serves requests on.
WORKER_THREADS_ENV = "MLFLOW_PLATFORM_WORKER_THREADS"


def route_group(method: str, route: Route | None) -> str:
    """The dashboard's and the alerts' unit: which part of the API a request used."""
    if route is None:
        return "unmatched"
    template = route.template
    if template.startswith("/v1/traces"):
        return "otlp"
    if "mlflow-artifacts" in template or "/artifacts/" in template or template.endswith("/get-artifact"):
        return "artifacts"
    if "/gateway/" in template or template.startswith("/gateway"):
        return "gateway"
    if "/registered-models" in template or "/model-versions" in template:
        return "registry"
    if "search" in template.rsplit("/", 1)[-1]:
        return "search"
    if "/api/" in template or "/ajax-api/" in template:
        return "tracking-write" if method in WRITES else "tracking-read"
    return "ui"


class Metrics:
    """The edge's metrics, created once per worker process (prometheus_client's multiprocess mode)."""

    def __init__(self, threads: int, registry=None):
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram

        into = {"registry": registry or REGISTRY}
        self.requests = Counter(
            "mlflow_platform_requests", "Requests by route group and status.", ["group", "status"], **into
        )
        self.duration = Histogram(
            "mlflow_platform_request_duration_seconds",
            "Time from the edge to the last byte sent, by route group.",
            ["group"],
            buckets=BUCKETS,
            **into,
        )
        self.auth_failures = Counter(
            "mlflow_platform_auth_failures", "Requests refused a login (401) or a route (403).", ["reason"], **into
        )
        live = {"multiprocess_mode": "livesum", **into}
        self.in_flight = Gauge("mlflow_platform_requests_in_flight", "Requests being served now.", **live)
        self.threads = Gauge("mlflow_platform_worker_threads", "Threads that can serve a request.", **live)
        self.artifact_bytes = Counter(
            "mlflow_platform_artifact_bytes", "Artifact bytes through the proxy.", ["direction"], **into
        )
        self.threads.set(threads)


def permission_cache_counter(registry=None) -> Callable[[str], None]:
    """``mlflow_platform_permission_cache_total{result}``: hits and misses of the auth-read cache."""
    from prometheus_client import REGISTRY, Counter

    counter = Counter(
        "mlflow_platform_permission_cache", "Auth-store reads, answered from the cache or not.", ["result"],
        registry=registry or REGISTRY,
    )  # fmt: skip
    return lambda result: counter.labels(result).inc()


def replica_fallback_counter(registry=None) -> Callable[[str], None]:
    """``mlflow_platform_replica_fallback_total{reason}``: searches the read replica could not
    answer, sent to the primary (``unreachable``: it refused a connection; ``failed``: a query
    failed there; ``retried``: it answered "no such run" or an SQL error, e.g. while behind)."""
    from prometheus_client import REGISTRY, Counter

    counter = Counter(
        "mlflow_platform_replica_fallback", "Store reads sent to the primary instead of the replica.", ["reason"],
        registry=registry or REGISTRY,
    )  # fmt: skip
    return lambda reason: counter.labels(reason).inc()


def metered(app: Callable, routes, threads: int, registry=None) -> Callable:
    """``app`` (the edge) with its requests counted and timed; ``routes`` finds each request's route."""
    metrics = Metrics(threads, registry)

    def serve(environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = time.perf_counter()
        method = environ.get("REQUEST_METHOD", "GET")
        group = route_group(method, routes.lookup(method, environ.get("PATH_INFO", "/")))
        seen: dict[str, object] = {}

        def recording_start(status: str, headers: list, exc_info=None):
            seen["status"], seen["headers"] = status.split(" ", 1)[0], headers
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        metrics.in_flight.inc()
        try:
            body = app(environ, recording_start)
        except BaseException:
            metrics.in_flight.dec()
            raise
        finished = _Finished(body, lambda: _record(metrics, group, method, environ, seen, started, finished.sent))
        return finished

    return serve


def _record(metrics: Metrics, group: str, method: str, environ: dict, seen: dict, started: float, sent: int) -> None:
    metrics.in_flight.dec()
    status = str(seen.get("status", "500"))
    metrics.requests.labels(group, status).inc()
    metrics.duration.labels(group).observe(time.perf_counter() - started)
    if status in ("401", "403"):
        metrics.auth_failures.labels("unauthenticated" if status == "401" else "forbidden").inc()
    if group == "artifacts" and status.startswith("2"):
        if method == "PUT":  # the received length (a chunked upload declares none and counts 0)
            metrics.artifact_bytes.labels("upload").inc(int(environ.get("CONTENT_LENGTH") or 0))
        elif method == "GET":  # what was sent, not what the header promised (a client may hang up)
            metrics.artifact_bytes.labels("download").inc(sent)


class _Finished:
    """The response body, with a callback when the server has sent it (WSGI calls ``close``)."""

    def __init__(self, body: Iterable[bytes], done: Callable[[], None]):
        self._body, self._done = body, done
        self.sent = 0

    def __iter__(self):
        for chunk in self._body:
            self.sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            if hasattr(self._body, "close"):
                self._body.close()
        finally:
            self._done()
