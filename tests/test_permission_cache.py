"""The auth-read cache in-process: reads are answered from it until their TTL, any write empties it,
a read that began before a write never stores its older answer, and set arguments are keys."""

from __future__ import annotations

import threading

from mlflow_platform import permission_cache


class Store:
    """The shape of MLflow's auth store: reads and writes, each counted."""

    def __init__(self):
        self.grants = {"ben": {"READ"}}
        self.queries = 0
        self.gate: threading.Event | None = None

    def list_grants(self, username, workspace, types):
        self.queries += 1
        if self.gate:
            self.gate.wait(5)
        return frozenset(self.grants.get(username, ()))

    def get_user(self, username):
        self.queries += 1
        return username

    def list_user_roles(self, user_id):
        self.queries += 1
        return []

    def revoke_user_resource_permission(self, username):
        self.grants.pop(username, None)

    def authenticate_user(self, username, password):
        self.queries += 1
        return True


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_reads_are_cached_until_their_ttl() -> None:
    store, clock = Store(), Clock()
    cache = permission_cache.Cache(10, clock)
    store.list_grants = permission_cache._reader(cache, "list_grants", store.list_grants)
    for _ in range(5):
        assert store.list_grants("ben", "search", {"experiment"}) == {"READ"}
    assert store.queries == 1 and cache.hits == 4
    clock.now = 10.5
    store.list_grants("ben", "search", {"experiment"})
    assert store.queries == 2


def test_a_write_empties_the_cache_at_once() -> None:
    store = Store()
    cache = permission_cache.install(store, 60)
    assert store.list_grants("ben", "search", {"experiment"}) == {"READ"}
    store.revoke_user_resource_permission("ben")
    assert store.list_grants("ben", "search", {"experiment"}) == frozenset()
    assert cache.misses == 2


def test_a_read_that_began_before_a_write_does_not_store_its_answer() -> None:
    store = Store()
    cache = permission_cache.install(store, 60)
    store.gate = threading.Event()
    slow = threading.Thread(target=lambda: store.list_grants("ben", "search", {"experiment"}))
    slow.start()  # reads the old grants, then waits
    store.revoke_user_resource_permission("ben")  # the write lands while the read is in flight
    store.gate.set()
    slow.join()
    store.gate = None
    assert store.list_grants("ben", "search", {"experiment"}) == frozenset()  # not the stale READ
    assert cache.hits == 0


def test_identity_is_never_cached_and_zero_turns_it_off() -> None:
    """The password check and the user record stay MLflow's (its credential cache keeps the user it
    read): a user deleted and created again must never come back with the old id or admin flag."""
    store = Store()
    permission_cache.install(store, 60)
    for _ in range(2):
        store.authenticate_user("ben", "x")
        store.get_user("ben")
    assert store.queries == 4
    untouched = Store()
    assert permission_cache.install(untouched, 0) is None
    untouched.list_grants("ben", "search", {"experiment"})
    untouched.list_grants("ben", "search", {"experiment"})
    assert untouched.queries == 2


def test_management_reads_that_decide_writes_are_never_cached() -> None:
    """SSO's group sync reads a user's roles to decide what to assign and unassign: from a stale
    worker it would leave a role behind for good (the SSO platform test caught it)."""
    store = Store()
    permission_cache.install(store, 60)
    store.list_user_roles(7)
    store.list_user_roles(7)
    assert store.queries == 2
    assert {"list_user_roles", "list_users_with_roles", "list_role_users"} <= permission_cache.UNCACHED


def test_the_request_workspace_is_part_of_the_key(monkeypatch) -> None:
    """Reads that take the workspace from MLflow's request context never answer for another team."""
    store = Store()
    permission_cache.install(store, 60)
    for workspace in ("team-a", "team-b", "team-a"):
        monkeypatch.setattr(permission_cache, "_workspace", lambda w=workspace: w)
        store.list_grants("ben", None, {"experiment"})
    assert store.queries == 2


def test_callers_get_copies_and_the_cache_is_bounded(monkeypatch) -> None:
    store = Store()
    cache = permission_cache.install(store, 60)
    first = store.list_grants("ben", "search", {"experiment"})
    assert store.list_grants("ben", "search", {"experiment"}) is not first  # a copy, each time
    monkeypatch.setattr(permission_cache, "MAX_ENTRIES", 100)
    bounded = permission_cache.Cache(60)
    for i in range(permission_cache.MAX_ENTRIES * 2):
        bounded.get_or_call(("has", i), lambda: True)
    assert len(bounded._entries) <= 100 and cache.hits == 1


def test_hits_and_misses_are_recorded() -> None:
    seen: list[str] = []
    store = Store()
    permission_cache.install(store, 60, seen.append)
    store.list_grants("ben", "search", {"experiment"})
    store.list_grants("ben", "search", {"experiment"})
    assert seen == ["miss", "hit"]
