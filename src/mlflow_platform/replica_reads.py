"""Reads from the database's read replica, without the three ways MLflow's own routing hurts users.

MLflow 3.17 can send every store call that does not write to a replica
(``--read-replica-backend-store-uri``, ``mlflow.store.db.utils._get_routing_session_maker``),
and never to the primary. Measured against a real standby (tests/test_read_replica.py):

- **A replica that is down stops the server from starting.** ``mlflow server`` verifies the
  replica's schema while it opens the stores and exits when it cannot connect. Here the server
  gets the replica's URL in ``READ_REPLICA_URI_ENV`` instead, not MLflow's flag, and builds the
  engine itself with MLflow's own ``create_sqlalchemy_engine``, which connects lazily.
- **Read-your-writes.** A run created a moment ago is not on a lagging replica yet, so the next
  call of the client that created it (``log_batch``, whose permission check reads the run;
  ``get_run``) answers 404, which MLflow's client does not retry. Here a point read (a store
  method named ``get_*``) that raises RESOURCE_DOES_NOT_EXIST on the replica, or a ``get_*_by_name``
  that finds nothing (``mlflow.set_experiment``'s lookup), is asked again of the primary. A real
  miss costs one more primary query; a search may still miss a very recent write (documented).
- **A dead replica.** Every read fails while writes succeed. Here a replica that refuses a
  connection sends that worker's reads to the primary for ``BREAKER_SECONDS``; the replica's URL
  carries a short ``connect_timeout`` so finding out costs seconds, not the TCP timeout.

Which calls read is MLflow's own classification (the ``read_only`` flag of each store method's
session). Only the tracking and registry stores read from the replica, and only outside the
permission checks: the auth store and the workspace store always read the primary (a revoked
grant or a deleted workspace must not live on for the replica's lag), and so does everything
MLflow's authorization reads (``authorize_on_primary``). A check that reads a run or a model from
a lagging replica denies a member the run it just created (403, not retried), and MLflow caches
that miss for the request's workspace.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import wraps
from typing import Any

from .errors import first_line

_logger = logging.getLogger(__name__)

#: The replica's SQLAlchemy URL (no password: libpq reads PGPASSWORD, the same role's).
READ_REPLICA_URI_ENV = "MLFLOW_PLATFORM_READ_REPLICA_URI"
#: How long a worker reads from the primary after the replica refused a connection.
BREAKER_SECONDS = 30.0
#: Seconds libpq waits for the replica to accept a connection (rendered into its URL).
CONNECT_TIMEOUT_SECONDS = 3

_on_primary: ContextVar[bool] = ContextVar("mlflow_platform_reads_on_primary", default=False)


class Breaker:
    """Per worker: open (reads go to the primary) for ``seconds`` after the replica failed."""

    def __init__(self, seconds: float = BREAKER_SECONDS, clock: Callable[[], float] = time.monotonic):
        self.seconds, self._clock, self._open_until = seconds, clock, 0.0
        self._lock = threading.Lock()

    @property
    def closed(self) -> bool:
        return self._clock() >= self._open_until

    def trip(self, reason: str) -> None:
        with self._lock:
            if self.closed:
                _logger.warning(
                    "read replica unreachable (%s): reads go to the primary for %.0fs", reason, self.seconds
                )
            self._open_until = self._clock() + self.seconds


@contextmanager
def on_primary() -> Iterator[None]:
    """Within this block, this thread's store reads go to the primary."""
    token = _on_primary.set(True)
    try:
        yield
    finally:
        _on_primary.reset(token)


def route(store: Any, replica: Any, breaker: Breaker, record: Callable[[str], None] | None = None) -> None:
    """Give ``store`` (an MLflow SqlAlchemy store) reads from the ``replica`` engine. MLflow's
    managed session (commit, rollback, its error mapping) is kept."""
    import sqlalchemy.exc
    import sqlalchemy.orm
    from mlflow.store.db.utils import _get_managed_session_maker

    primary_sessions = sqlalchemy.orm.sessionmaker(bind=store.engine)
    replica_sessions = sqlalchemy.orm.sessionmaker(bind=replica)

    def replica_or_primary() -> sqlalchemy.orm.Session:
        if _on_primary.get() or not breaker.closed:
            return primary_sessions()
        session = replica_sessions()
        try:
            session.connection()  # the pool's pre-ping: a dead replica fails here, before any query
        except sqlalchemy.exc.OperationalError as exc:
            session.close()
            breaker.trip(first_line(exc)[:120])
            if record:
                record("unreachable")
            return primary_sessions()
        return session

    write = _get_managed_session_maker(primary_sessions, store.db_type)
    read = _get_managed_session_maker(replica_or_primary, store.db_type)

    @contextmanager
    def managed_session(read_only: bool = True):
        with (read if read_only else write)(read_only=read_only) as session:
            yield session

    store.ManagedSessionMaker = managed_session
    _ask_primary_on_miss(store, record)


def _ask_primary_on_miss(store: Any, record: Callable[[str], None] | None) -> None:
    """Every ``get_*`` method (``get_or_create_*`` writes): RESOURCE_DOES_NOT_EXIST from the replica,
    or None from a ``get_*_by_name``, is asked again of the primary."""
    for name in dir(type(store)):
        if name.startswith("get_") and not name.startswith("get_or_create_") and callable(getattr(store, name)):
            setattr(store, name, _point_read(getattr(store, name), name.endswith("_by_name"), record))


def _point_read(method: Callable, none_is_miss: bool, record: Callable[[str], None] | None) -> Callable:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    missing = ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)

    @wraps(method)
    def read(*args, **kwargs):
        if _on_primary.get():
            return method(*args, **kwargs)
        try:
            found = method(*args, **kwargs)
        except MlflowException as exc:
            if exc.error_code != missing:
                raise
            found, missed = None, True
        else:
            missed = none_is_miss and found is None
        if not missed:
            return found
        if record:
            record("not_found")
        with on_primary():
            return method(*args, **kwargs)

    return read


def authorize_on_primary(flask_app: Any) -> None:
    """Every read of MLflow's permission checks from the primary: the Flask app's before- and
    after-request hooks, and the validators of MLflow's FastAPI permission middleware (looked up
    per request through ``mlflow.server.auth._find_fastapi_validator``). The lookups are by key,
    cheap for the primary; the request's own reads still go to the replica."""
    from mlflow.server import auth

    for hooks in (flask_app.before_request_funcs, flask_app.after_request_funcs):
        for key, functions in list(hooks.items()):
            hooks[key] = [_primary_call(function) for function in functions]
    find = auth._find_fastapi_validator

    def find_on_primary(*args, **kwargs):
        validator = find(*args, **kwargs)
        return None if validator is None else _primary_validator(validator)

    auth._find_fastapi_validator = find_on_primary


def _primary_call(function: Callable) -> Callable:
    @wraps(function)
    def call(*args, **kwargs):
        with on_primary():
            return function(*args, **kwargs)

    return call


def _primary_validator(validator: Callable) -> Callable:
    @wraps(validator)
    async def validate(*args, **kwargs):
        with on_primary():
            result = validator(*args, **kwargs)
            return await result if inspect.isawaitable(result) else result

    return validate


def install(record: Callable[[str], None] | None = None) -> list[str]:
    """On the server's tracking and registry stores, when the server was given a replica; returns
    the stores routed. One engine (one pool per process) serves both."""
    uri = os.environ.get(READ_REPLICA_URI_ENV)
    if not uri:
        return []
    from mlflow.server import handlers
    from mlflow.store.db.utils import create_sqlalchemy_engine

    replica, breaker = create_sqlalchemy_engine(uri), Breaker()
    stores = {"tracking": handlers._get_tracking_store(), "registry": handlers._get_model_registry_store()}
    for store in stores.values():
        route(store, replica, breaker, record)
    return list(stores)
