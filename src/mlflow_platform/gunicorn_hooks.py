"""gunicorn server hooks, loaded with ``--config=python:mlflow_platform.gunicorn_hooks`` (rendered
with ``server.prometheus``): a worker that exits (``--max-requests`` recycling, a timeout, an OOM
kill) is marked dead in prometheus_client's multiprocess directory. Otherwise its live-sum gauges
(threads, requests in flight) keep counting, and recycling workers would inflate the thread count
until the saturation alert could never fire
(https://prometheus.github.io/client_python/multiprocess/)."""

from __future__ import annotations


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
