"""The permission cache's staleness bound, on the running platform: a grant revoked through the
server stops working within `server.permissionCacheTtlSeconds` on every worker, and at once on the
worker that revoked it (the cache is per worker; gunicorn's workers take turns). A grant given is
honoured within the same bound."""

from __future__ import annotations

import re
import time

from .conftest import TeamData, User

EXPERIMENT_READ = "/api/2.0/mlflow/experiments/get?experiment_id={}"
#: MLflow 3.17's per-user grants (mlflow/server/auth/routes.py)
GRANT = "/api/3.0/mlflow/users/permissions/grant"
REVOKE = "/api/3.0/mlflow/users/permissions/revoke"


def _reads(ben: User, data: TeamData) -> int:
    return ben.send("GET", EXPERIMENT_READ.format(data.experiment_id), data.workspace).status


def _until(check, seconds: float) -> float | None:
    """Seconds until ``check`` held on 10 requests in a row (each on a new connection), or None."""
    started, streak = time.monotonic(), 0
    while time.monotonic() - started < seconds:
        streak = streak + 1 if check() else 0
        if streak >= 10:
            return time.monotonic() - started
        time.sleep(0.1)
    return None


def _cache_hits(admin: User) -> float:
    """The summed hits of every worker's cache, from /metrics."""
    served = admin.send("GET", "/metrics").text
    return sum(float(v) for v in re.findall(r'mlflow_platform_permission_cache_total\{result="hit"\} (\S+)', served))


def test_a_revoked_grant_stops_working_within_the_ttl(platform, users, search_data: TeamData) -> None:
    ttl = platform.config.server.permission_cache_ttl_seconds
    assert ttl > 0, "the local stack runs with the cache on, as deployments do"
    admin, ben = users["admin"], users["ben"]
    hits_before = _cache_hits(admin)
    grant = {"username": "ben", "resource_type": "experiment", "resource_id": search_data.experiment_id}
    assert _reads(ben, search_data) == 403  # the control: ben (ranking) may not read search's data
    created = admin.send("POST", GRANT, "search", body={**grant, "permission": "READ"})
    assert created.status == 200, created.text[:300]
    try:
        granted = _until(lambda: _reads(ben, search_data) == 200, ttl + 5)
        assert granted is not None, "the grant never took effect"
        deleted = admin.send("POST", REVOKE, "search", body=grant)
        assert deleted.status == 200, deleted.text[:300]
        refused = _until(lambda: _reads(ben, search_data) == 403, ttl + 5)
    finally:
        admin.send("POST", REVOKE, "search", body=grant)  # idempotent: the grant never outlives the test
    assert refused is not None and refused <= ttl + 1.5, f"still readable {refused} s after the revoke (ttl {ttl} s)"
    assert granted <= ttl + 1.5
    assert _cache_hits(admin) > hits_before  # the cache answered during the test: the bound is the cache's
