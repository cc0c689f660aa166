"""What the edge's metrics cost per request, in-process: the same trivial WSGI app called bare and
through ``observability.metered`` (prometheus_client's multiprocess files, as under gunicorn).

    python -m benchmarks.edge_metrics
"""

from __future__ import annotations

import os
import tempfile
import time
from types import SimpleNamespace


def main(requests: int = 20000) -> None:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="edge-metrics-")
    from mlflow_platform.observability import metered  # prometheus_client reads the directory on import

    class Routes:
        def lookup(self, method, path):
            return SimpleNamespace(template="/api/2.0/mlflow/runs/log-batch")

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/api/2.0/mlflow/runs/log-batch"}
    timings = {}
    for name, served in (("bare", app), ("metered", metered(app, Routes(), threads=2))):
        started = time.perf_counter()
        for _ in range(requests):
            body = served(environ, lambda *args: None)
            b"".join(body)
            getattr(body, "close", lambda: None)()
        timings[name] = (time.perf_counter() - started) / requests * 1e6
    print(f"{requests} requests: bare {timings['bare']:.1f} µs, metered {timings['metered']:.1f} µs per request; "
          f"the metrics cost {timings['metered'] - timings['bare']:.1f} µs a request")  # fmt: skip


if __name__ == "__main__":
    main()
