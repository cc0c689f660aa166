"""Teams as the stack declares them, reconciled onto a running server through MLflow's own APIs:
a workspace per team, workspace-scoped roles (basic-auth RBAC), users and role assignments.

Only what this module created is ever changed or removed: its roles carry a description prefix,
MLflow's seeded roles (`admin`, `user`) and users it did not create are left alone, and users and
workspaces are never deleted (a user without a role has no access; a workspace holds data).
Removals happen only with ``prune``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .config import TeamConfig

MANAGED = "mlflow-platform: "
ADMIN_ROLE, MEMBER_ROLE, READER_ROLE = "team-admin", "team-member", "team-reader"
#: What each role grants inside its workspace. Workspace grants take USE or MANAGE only (MLflow's
#: rule); a read-only cross-team grant is therefore READ on each resource type.
ROLE_GRANTS: dict[str, tuple[tuple[str, str, str], ...]] = {
    ADMIN_ROLE: (("workspace", "*", "MANAGE"),),
    MEMBER_ROLE: (
        ("workspace", "*", "USE"),
        ("experiment", "*", "EDIT"),
        ("registered_model", "*", "EDIT"),
        ("prompt", "*", "EDIT"),
    ),
    READER_ROLE: (("experiment", "*", "READ"), ("registered_model", "*", "READ"), ("prompt", "*", "READ")),
}
ROLE_PURPOSE = {
    ADMIN_ROLE: "manages everything in the team's workspace",
    MEMBER_ROLE: "reads and edits the team's experiments, models and prompts, creates new ones",
    READER_ROLE: "reads the team's experiments, models and prompts (another team's users)",
}


class PasswordStore(Protocol):
    """Where generated passwords of new users go (never the stack file)."""

    def get(self, username: str) -> str | None: ...
    def put(self, username: str, password: str) -> None: ...


@dataclass(frozen=True)
class Desired:
    workspaces: dict[str, str]  # name -> description
    roles: dict[tuple[str, str], tuple[tuple[str, str, str], ...]]  # (workspace, role) -> grants
    users: tuple[str, ...]
    assignments: frozenset[tuple[str, str, str]]  # (username, workspace, role)


def desired_state(teams: tuple[TeamConfig, ...]) -> Desired:
    by_name = {t.name: t for t in teams}
    roles, assignments = {}, set()
    for team in teams:
        ws = team.workspace_name
        roles[(ws, ADMIN_ROLE)] = ROLE_GRANTS[ADMIN_ROLE]
        roles[(ws, MEMBER_ROLE)] = ROLE_GRANTS[MEMBER_ROLE]
        assignments |= {(u, ws, ADMIN_ROLE) for u in team.admins} | {(u, ws, MEMBER_ROLE) for u in team.members}
        if team.readers:
            roles[(ws, READER_ROLE)] = ROLE_GRANTS[READER_ROLE]
            assignments |= {(u, ws, READER_ROLE) for r in team.readers for u in by_name[r].users}
    users = tuple(dict.fromkeys(u for t in teams for u in t.users))
    workspaces = {t.workspace_name: f"team {t.name} (experiments under {t.prefix}/)" for t in teams}
    return Desired(workspaces, roles, users, frozenset(assignments))


@dataclass
class Change:
    description: str
    apply: Callable[[], None] = field(repr=False)
    removal: bool = False
    user: str | None = None  # whose role assignment it removes


class Server:
    """The live state, read and changed through MLflow's clients (as an admin)."""

    def __init__(self, tracking_uri: str):
        import warnings

        with warnings.catch_warnings():  # MLflow's FastAPI module warns about Starlette on import
            warnings.simplefilter("ignore", DeprecationWarning)
            import mlflow.server
        from mlflow import MlflowClient
        from mlflow.utils.credentials import get_default_host_creds

        self.tracking = MlflowClient(tracking_uri)
        self.auth = mlflow.server.get_app_client("basic-auth", tracking_uri=tracking_uri)
        self._creds = get_default_host_creds(tracking_uri)

    def users(self) -> dict[str, list[dict]]:
        """Every user and its roles (name, workspace, description), in one admin call."""
        from mlflow.server.auth.routes import LIST_USERS
        from mlflow.utils.rest_utils import http_request, verify_rest_response

        response = verify_rest_response(http_request(self._creds, LIST_USERS, "GET"), LIST_USERS)
        return {u["username"]: u.get("roles", []) for u in response.json()["users"]}

    def workspaces(self) -> set[str]:
        return {w.name for w in self.tracking.list_workspaces()}

    def managed_roles(self, workspace: str) -> dict[str, object]:
        return {r.name: r for r in self.auth.list_roles(workspace) if (r.description or "").startswith(MANAGED)}

    def all_managed_roles(self) -> list:
        return [r for r in self.auth.list_all_roles() if (r.description or "").startswith(MANAGED)]


def plan_changes(server: Server, desired: Desired, passwords: PasswordStore) -> list[Change]:
    """Every change that brings the server to ``desired``; removals are marked."""
    changes: list[Change] = []
    existing, users = server.workspaces(), server.users()
    for ws, description in desired.workspaces.items():
        if ws not in existing:
            changes.append(
                Change(f"create workspace {ws}", lambda w=ws, d=description: _create_workspace(server, w, d))
            )
    for username in desired.users:
        if username not in users:
            changes.append(Change(f"create user {username}", lambda u=username: _create_user(server, u, passwords)))
    role_ids: dict[tuple[str, str], Callable[[], int]] = {}
    deletions: list = []
    for ws in desired.workspaces:
        live = server.managed_roles(ws) if ws in existing else {}
        for (role_ws, name), grants in desired.roles.items():
            if role_ws == ws:
                role_ids[(ws, name)] = _role_changes(server, ws, name, grants, live.get(name), changes)
        deletions += [role for name, role in live.items() if (ws, name) not in desired.roles]
    _assignment_changes(server, desired, existing, users, role_ids, changes)
    deletions += [r for r in server.all_managed_roles() if r.workspace not in desired.workspaces]
    # Last: a deleted role takes its assignments with it, so unassigning afterwards would fail.
    for role in deletions:
        changes.append(
            Change(f"delete role {role.workspace}/{role.name}", lambda r=role: server.auth.delete_role(r.id), True)
        )
    return changes


def _create_workspace(server: Server, name: str, description: str) -> None:
    server.tracking.create_workspace(name, description=description)


def _create_user(server: Server, username: str, passwords: PasswordStore) -> None:
    password = passwords.get(username) or secrets.token_urlsafe(24)
    passwords.put(username, password)  # kept before the user exists: a crash loses nothing
    server.auth.create_user(username, password)


def _role_changes(server: Server, ws: str, name: str, grants, live, changes: list[Change]) -> Callable[[], int]:
    """Create the role or bring its grants to ``grants``; returns how to get its id once applied."""
    if live is None:
        created: dict[str, int] = {}

        def create() -> None:
            role = server.auth.create_role(ws, name, MANAGED + ROLE_PURPOSE[name])
            for resource_type, pattern, permission in grants:
                server.auth.add_role_permission(role.id, resource_type, pattern, permission)
            created["id"] = role.id

        changes.append(Change(f"create role {ws}/{name}: " + ", ".join(":".join(g) for g in grants), create))
        return lambda: created["id"]
    have = {
        (p.resource_type, p.resource_pattern, p.permission): p.id for p in server.auth.list_role_permissions(live.id)
    }
    for grant in grants:
        if grant not in have:
            changes.append(
                Change(
                    f"grant {ws}/{name} {':'.join(grant)}", lambda g=grant: server.auth.add_role_permission(live.id, *g)
                )
            )
    for grant, permission_id in have.items():
        if grant not in grants:
            changes.append(
                Change(
                    f"revoke {ws}/{name} {':'.join(grant)}",
                    lambda p=permission_id: server.auth.remove_role_permission(p),
                )
            )
    return lambda: live.id


def _assignment_changes(
    server: Server, desired: Desired, existing: set[str], users: dict[str, list[dict]], role_ids, changes: list[Change]
) -> None:
    live = {
        (username, role["workspace"], role["name"])
        for username, roles in users.items()
        for role in roles
        if (role.get("description") or "").startswith(MANAGED) and role["workspace"] in desired.workspaces
    }
    for ws in desired.workspaces:
        for name, role in (server.managed_roles(ws) if ws in existing else {}).items():
            role_ids.setdefault((ws, name), lambda r=role: r.id)
    for username, ws, name in sorted(desired.assignments - live):
        changes.append(
            Change(
                f"assign {username} -> {ws}/{name}",
                lambda u=username, k=(ws, name): server.auth.assign_role(u, role_ids[k]()),
            )
        )
    for username, ws, name in sorted(live - desired.assignments):
        if (ws, name) in role_ids:
            changes.append(
                Change(
                    f"unassign {username} from {ws}/{name}",
                    lambda u=username, k=(ws, name): server.auth.unassign_role(u, role_ids[k]()),
                    removal=True,
                    user=username,
                )
            )


@dataclass
class SyncReport:
    applied: list[str] = field(default_factory=list)
    pending_removals: list[str] = field(default_factory=list)


def sync(
    tracking_uri: str,
    teams: tuple[TeamConfig, ...],
    passwords: PasswordStore,
    *,
    prune: bool = False,
    dry_run: bool = False,
    keep_undeclared_users: bool = False,
) -> SyncReport:
    """Create or update what the stack declares; remove what it no longer declares only with ``prune``.
    ``keep_undeclared_users`` leaves the roles of users the stack does not name (with SSO, people's
    roles follow their IdP groups at each sign-in)."""
    server = Server(tracking_uri)
    desired = desired_state(teams)
    changes = plan_changes(server, desired, passwords)
    if keep_undeclared_users:
        changes = [c for c in changes if c.user is None or c.user in desired.users]
    report = SyncReport()
    for change in changes:
        if change.removal and not prune:
            report.pending_removals.append(change.description)
            continue
        if not dry_run:
            change.apply()
        report.applied.append(change.description)
    return report
