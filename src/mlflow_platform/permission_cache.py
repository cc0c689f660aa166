"""A per-worker cache of MLflow's auth-store reads (users, roles, grants, permissions), so a request
that MLflow authorizes with several auth-database queries makes none while the answer is fresh.

Bounded staleness, by construction:
- every read is cached for at most ``ttl`` seconds (``server.permissionCacheTtlSeconds``);
- any write through the auth store (a grant, a revoke, a new user, a role change) empties this
  worker's cache at once, so the worker that made a change never serves the old answer;
- the other workers and pods see it within ``ttl``.

A revoked grant therefore stops working within ``ttl`` everywhere, and immediately where it was
revoked. MLflow's own credential cache (``server.authCacheTtlSeconds``) bounds a changed password
the same way.
"""

from __future__ import annotations

import copy
import functools
import threading
import time
from collections.abc import Callable
from typing import Any

from cachetools import TTLCache

#: Auth-store methods that only read. Everything else public (create_*, update_*, delete_*, grant_*,
#: revoke_*, add_*, remove_*, assign_*, unassign_*, set_*, rename_*) is a write and empties the cache.
READS = ("get_", "list_", "has_", "is_", "user_has_")
#: Never cached:
#: - the password check and the user record: MLflow's credential cache keeps the User it read when
#:   the credentials were first seen, so a cached user here would stack on its TTL, and a user
#:   deleted and created again would keep the old one's id and admin flag;
#: - schema setup;
#: - the management reads (users, roles, their members and permissions): a client that reads them to
#:   decide its next write (SSO's group sync, `teams sync`, an admin's UI) must see the last write,
#:   whichever worker answers, or it computes its changes from a stale picture and leaves a role behind.
UNCACHED = {
    "authenticate_user",
    "get_user",
    "has_user",
    "init_db",
    "list_users",
    "list_users_with_roles",
    "get_role",
    "get_role_by_name",
    "list_roles",
    "list_role_users",
    "list_role_permissions",
    "list_user_roles",
    "list_user_roles_for_workspace",
}
#: Public methods that are not reads yet change nothing a read answers: the password check, schema setup.
NOT_WRITES = {"authenticate_user", "init_db"}


def is_write(name: str) -> bool:
    """An auth-store method that may change what a read answers (a grant, a revoke, a new user)."""
    return not name.startswith("_") and not name.startswith(READS) and name not in NOT_WRITES


#: Entries per worker: the arguments come from requests, so the cache is bounded.
MAX_ENTRIES = 20_000
TTL_ENV = "MLFLOW_PLATFORM_PERMISSION_CACHE_TTL"


class Cache:
    """Answers by (method, arguments), each kept ``ttl`` seconds; counts hits and misses."""

    def __init__(
        self, ttl: float, clock: Callable[[], float] = time.monotonic, record: Callable[[str], None] | None = None
    ):
        #: told "hit" or "miss" for every read (the Prometheus counter, when metrics are on)
        self._record = record or (lambda result: None)
        #: bounded (the arguments come from requests), entries expire ``ttl`` after they were stored
        self._entries: TTLCache = TTLCache(MAX_ENTRIES, ttl, timer=clock)
        self._lock = threading.Lock()
        #: bumped by every write: a read that began before it does not store its (older) answer
        self._generation = 0
        self.hits = self.misses = 0

    def get_or_call(self, key: tuple, call: Callable[[], Any]) -> Any:
        missing = object()
        with self._lock:
            found, generation = self._entries.get(key, missing), self._generation
            hit = found is not missing
            if hit:
                self.hits += 1
            else:
                self.misses += 1
        self._record("hit" if hit else "miss")
        if hit:
            return copy.deepcopy(found)  # callers may change what they get: never the cached copy
        value = call()  # outside the lock: a slow query must not serialize the worker's threads
        with self._lock:
            if generation == self._generation:  # no write since the read began
                self._entries[key] = copy.deepcopy(value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()


def _frozen(value: Any) -> Any:
    """A hashable stand-in for an argument (MLflow passes resource types as a set)."""
    if isinstance(value, (set, frozenset)):
        return frozenset(_frozen(v) for v in value)
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    return value


def _workspace() -> str | None:
    """The request's workspace: many reads take it from MLflow's request context, not from their
    arguments, so it is part of every key (one team's answer is never another's)."""
    from mlflow.utils import workspace_context

    return workspace_context.get_request_workspace()


def _reader(cache: Cache, name: str, method: Callable) -> Callable:
    @functools.wraps(method)
    def read(*args, **kwargs):
        try:
            key = (name, _workspace(), type(args[0]).__name__ if args else "", _frozen(args), _frozen(kwargs))
            hash(key)
        except TypeError:  # an argument with no stable identity: ask the database
            return method(*args, **kwargs)
        return cache.get_or_call(key, lambda: method(*args, **kwargs))

    return read


def _writer(cache: Cache, method: Callable) -> Callable:
    @functools.wraps(method)
    def write(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        finally:
            cache.clear()  # after the change, so no read fills the cache with the old answer

    return write


def install(store: Any, ttl: float, record: Callable[[str], None] | None = None) -> Cache | None:
    """Wrap the auth store's public methods on the instance MLflow's auth module uses."""
    if ttl <= 0:
        return None
    cache = Cache(ttl, record=record)
    wrap(store, cache, lambda name: not name.startswith("_") and name not in UNCACHED)
    return cache


def wrap(
    store: Any, cache: Cache, kept: Callable[[str], bool], read: Callable[[Callable, Callable], Callable] | None = None
) -> None:
    """On ``store``'s instance: every write method empties ``cache``; each read ``kept`` names is
    answered from it (through ``read(cached, fresh)`` when given, which picks per call)."""
    for name in dir(type(store)):
        method = getattr(store, name)
        if not callable(method):
            continue
        if is_write(name):
            setattr(store, name, _writer(cache, method))
        elif kept(name):
            cached = _reader(cache, name, method)
            setattr(store, name, read(cached, method) if read else cached)
