"""A metric's history is served a page at a time, so a long one cannot pin a worker.

MLflow answers ``GET /metrics/get-history`` without ``max_results`` with every point at once: for a
metric of a million steps that is 127 MB of JSON built in one worker thread for 37 s
(measured in ``benchmarks/data_scale.py``), and past the worker timeout gunicorn kills the worker
with every other request it was serving. MLflow's own client never asks that way: it pages by
25,000 (``GET_METRIC_HISTORY_MAX_RESULTS``) and follows ``next_page_token``, and so does the UI.

So the edge gives a request that asks for no limit, or for more than ``page_size``, the
``page_size`` limit: MLflow then answers one page and a ``next_page_token``, the documented
continuation of that API. A client that pages sees no difference; one that does not gets the
first page and a token instead of a dead worker.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl, urlencode

PAGE_SIZE_ENV = "MLFLOW_PLATFORM_METRIC_HISTORY_PAGE_SIZE"
PATHS = frozenset({"/api/2.0/mlflow/metrics/get-history", "/ajax-api/2.0/mlflow/metrics/get-history"})

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


def capped_query(query: str, page_size: int) -> str:
    """``query`` with one ``max_results`` of at most ``page_size``. A single value MLflow would
    refuse (not a number, not positive) is left for MLflow to refuse; repeated values, which
    parsers read differently, are replaced."""
    pairs = parse_qsl(query, keep_blank_values=True)
    asked = [value for key, value in pairs if key == "max_results"]
    if len(asked) == 1:
        try:
            if int(asked[0]) <= page_size:
                return query
        except ValueError:
            return query
    kept = [(k, v) for k, v in pairs if k != "max_results"]
    return urlencode([*kept, ("max_results", str(page_size))])


def paged(app: WSGIApp, page_size: int) -> WSGIApp:
    def serve(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "GET" and environ.get("PATH_INFO") in PATHS:
            environ["QUERY_STRING"] = capped_query(environ.get("QUERY_STRING", ""), page_size)
        return app(environ, start_response)

    return serve


def from_environment(app: WSGIApp) -> WSGIApp:
    """Wrap ``app`` when the rendered server sets a page size (0 or unset: MLflow's behaviour)."""
    size = int(os.environ.get(PAGE_SIZE_ENV) or 0)
    return paged(app, size) if size > 0 else app
