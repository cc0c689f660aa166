"""Searches and metric histories from the database's read replica; everything else from the primary.

MLflow 3.17 can send every store call that does not write to a replica
(``--read-replica-backend-store-uri``, ``mlflow.store.db.utils._get_routing_session_maker``),
and never to the primary. Measured against a real standby and reviewed twice
(tests/test_read_replica.py), that hurts users in ways a fallback cannot repair:

- **Stale answers nobody can detect.** A lagging replica moves an alias back (``@champion``
  resolved to the version before the move), answers a permission check "no such model" (a 403
  that MLflow then caches), hides a run from ``log_metric`` with a ``model_id`` and from the UI's
  run page. Retrying misses on the primary fixed some of these, not a stale hit.
- **A replica that is down stops the server from starting.** ``mlflow server`` verifies the
  replica's schema while it opens the stores, retries for about 100 s and exits.

So the replica serves an allowlist, ``REPLICA_READS``: the tracking store's searches and metric
histories, the reads that are heavy at scale and whose users accept a few seconds' staleness (a
search may miss the newest runs while the replica lags: documented). Every other read (point
reads, the registry, permission checks, the auth and workspace stores) goes to the primary. The
server gets the replica's URL in ``READ_REPLICA_URI_ENV``, not MLflow's flag, and builds the engine
with MLflow's own ``create_sqlalchemy_engine``, which connects lazily. A replica that refuses a
connection, or fails a query, sends that worker's searches to the primary for ``BREAKER_SECONDS``
(the failed search is asked again there); its URL carries a short ``connect_timeout`` and TCP
keepalives, so a replica that went away is noticed in seconds.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar
from functools import wraps
from typing import Any

from .errors import first_line

_logger = logging.getLogger(__name__)

#: The replica's SQLAlchemy URL (no password: libpq reads PGPASSWORD, the same role's).
READ_REPLICA_URI_ENV = "MLFLOW_PLATFORM_READ_REPLICA_URI"
#: How long a worker searches the primary after the replica refused a connection or failed a query.
BREAKER_SECONDS = 30.0
#: Seconds libpq waits for the replica to accept a connection (rendered into its URL).
CONNECT_TIMEOUT_SECONDS = 3
#: libpq's TCP keepalives and user timeout: a connection to a replica that vanished from the
#: network fails in about 10 s instead of the kernel's default of minutes.
KEEPALIVES = "&keepalives=1&keepalives_idle=5&keepalives_interval=2&keepalives_count=3&tcp_user_timeout=10000"

#: Inside a ``REPLICA_READS`` call: a list that records each replica session handed out (None outside).
_on_replica: ContextVar[list | None] = ContextVar("mlflow_platform_reads_on_replica", default=None)
#: PostgreSQL's message for a replica query cancelled to let replay go on (SQLSTATE 40001): the
#: replica is healthy, so the query is asked of the primary without opening the breaker.
RECOVERY_CONFLICT = "conflict with recovery"


class Breaker:
    """Per worker: open (searches go to the primary) for ``seconds`` after the replica failed."""

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
                    "read replica unreachable (%s): searches go to the primary for %.0fs", reason, self.seconds
                )
            self._open_until = self._clock() + self.seconds


#: Tracking-store methods the replica answers. Each runs in a read-only session (MLflow's split);
#: what it calls inside inherits the choice, and a write session still goes to the primary.
REPLICA_READS = frozenset(
    {
        "search_runs",
        "search_experiments",
        "search_logged_models",
        "search_traces",
        "search_datasets",
        "get_metric_history",
        "get_metric_history_bulk",
        "get_metric_history_bulk_interval",
        "get_metric_history_bulk_interval_from_steps",
    }
)


def route(store: Any, replica: Any, breaker: Breaker, record: Callable[[str], None] | None = None) -> None:
    """Give ``store`` (MLflow's SqlAlchemy tracking store) its ``REPLICA_READS`` from the
    ``replica`` engine. MLflow's managed session (commit, rollback, its error mapping) is kept."""
    import sqlalchemy.exc
    import sqlalchemy.orm
    from mlflow.store.db.utils import _get_managed_session_maker

    primary_sessions = sqlalchemy.orm.sessionmaker(bind=store.engine)
    replica_sessions = sqlalchemy.orm.sessionmaker(bind=replica)

    def replica_or_primary() -> sqlalchemy.orm.Session:
        used = _on_replica.get()
        if used is None or not breaker.closed:
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
        used.append(session)
        return session

    write = _get_managed_session_maker(primary_sessions, store.db_type)
    read = _get_managed_session_maker(replica_or_primary, store.db_type)

    @contextmanager
    def managed_session(read_only: bool = True):
        with (read if read_only else write)(read_only=read_only) as session:
            yield session

    store.ManagedSessionMaker = managed_session
    for name in REPLICA_READS:
        if callable(getattr(type(store), name, None)):
            setattr(store, name, _replica_read(getattr(store, name), breaker, record))


def _replica_read(method: Callable, breaker: Breaker, record: Callable[[str], None] | None) -> Callable:
    """``method`` with its read sessions on the replica. When the replica answered with an error,
    the call is made again on the primary: TEMPORARILY_UNAVAILABLE (the replica failed; the breaker
    opens unless replay merely cancelled the query), RESOURCE_DOES_NOT_EXIST (a metric history of a
    run the replica has not seen yet) and BAD_REQUEST (MLflow's mapping of an SQL error: a replica
    that has not replayed a schema migration yet)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import BAD_REQUEST, RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE, ErrorCode

    unavailable = ErrorCode.Name(TEMPORARILY_UNAVAILABLE)
    retried = {unavailable, ErrorCode.Name(RESOURCE_DOES_NOT_EXIST), ErrorCode.Name(BAD_REQUEST)}

    @wraps(method)
    def read(*args, **kwargs):
        if _on_replica.get() is not None or not breaker.closed:  # nested in a replica read, or breaker open
            return method(*args, **kwargs)
        used: list = []
        token = _on_replica.set(used)
        try:
            return method(*args, **kwargs)
        except MlflowException as exc:
            if not used or exc.error_code not in retried:
                raise  # the primary's own answer, or a real one
            if exc.error_code == unavailable and RECOVERY_CONFLICT not in str(exc):
                breaker.trip(first_line(exc)[:120])
            if record:
                record("failed" if exc.error_code == unavailable else "retried")
        finally:
            _on_replica.reset(token)
        return method(*args, **kwargs)

    return read


def install(record: Callable[[str], None] | None = None) -> bool:
    """On the server's tracking store, when the server was given a replica."""
    uri = os.environ.get(READ_REPLICA_URI_ENV)
    if not uri:
        return False
    from mlflow.server import handlers
    from mlflow.store.db.utils import create_sqlalchemy_engine

    route(handlers._get_tracking_store(), create_sqlalchemy_engine(uri), Breaker(), record)
    return True
