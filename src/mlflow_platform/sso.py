"""Single sign-on on the server: MLflow's basic-auth ``authorization_function`` that accepts either
basic auth (machines, exactly as before) or the ALB's verified identity header (people).

A person's MLflow user is created on first sign-in with no usable password, and its admin flag and
team roles follow its IdP groups on every sign-in, so leaving a group takes effect. A header that is
forged, expired, signed by another ALB, sent on a client API path or from a peer that is not the
ALB is a 401: never a fall-through to basic auth.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

from .alb_identity import HEADER, VERIFIED_SSO_USER, Identity, IdentityRejected, PublicKeys, Verifier

SETTINGS_ENV = "MLFLOW_PLATFORM_SSO_CONFIG"
#: Client paths the ALB forwards without its login (basic auth applies); everything else, the UI,
#: ``/ajax-api/…``, static files and artifact views, goes through ``authenticate-oidc``.
#: ALB path patterns: case-sensitive, ``*`` any characters, ``?`` one.
MACHINE_PATHS = ("/api/*", "/v1/traces", "/gateway/*", "/health")
#: Stored instead of a password hash: matches no password (werkzeug cannot parse it).
SSO_ONLY_PASSWORD = "!sso-sign-in-only"
LOGOUT_PATH = "/platform/logout"
#: The ALB's session cookie is split in up to four shards.
SESSION_COOKIES = tuple(f"AWSELBAuthSessionCookie-{i}" for i in range(4))

_log = logging.getLogger(__name__)


def alb_pattern_matches(pattern: str, path: str) -> bool:
    """The ALB's path-pattern rule: case-sensitive; ``*`` matches 0+ characters and ``?`` exactly one."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, path) is not None


def is_machine_path(path: str) -> bool:
    return any(alb_pattern_matches(p, path) for p in MACHINE_PATHS)


@dataclass(frozen=True)
class TeamRole:
    group: str
    workspace: str
    role: str  # a teams.py role name


@dataclass(frozen=True)
class SsoSettings:
    """What the server needs to verify and map identities (the rendered ``sso.json``)."""

    signer: str
    key_endpoint: str
    trusted_proxies: tuple[str, ...]
    issuer: str | None = None
    client_id: str | None = None
    username_claim: str = "email"
    groups_claim: str = "groups"
    admin_groups: tuple[str, ...] = ()
    team_roles: tuple[TeamRole, ...] = ()
    logout_url: str | None = None
    #: How long a (user, groups) pair is not re-reconciled in one process.
    cache_seconds: int = 60

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> SsoSettings:
        data = json.loads(text)
        data["team_roles"] = tuple(TeamRole(**r) for r in data.get("team_roles", ()))
        for key in ("trusted_proxies", "admin_groups"):
            data[key] = tuple(data.get(key, ()))
        return cls(**data)

    def from_trusted_peer(self, address: str | None) -> bool:
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            return False
        return any(ip in ipaddress.ip_network(cidr, strict=False) for cidr in self.trusted_proxies)

    def verifier(self) -> Verifier:
        return Verifier(
            signer=self.signer,
            keys=PublicKeys(self.key_endpoint),
            username_claim=self.username_claim,
            groups_claim=self.groups_claim,
            issuer=self.issuer,
            client_id=self.client_id,
        )


@cache
def settings() -> SsoSettings | None:
    path = os.environ.get(SETTINGS_ENV)
    return SsoSettings.from_json(Path(path).read_text()) if path else None


@cache
def _verifier() -> Verifier:
    found = settings()
    if found is None:
        raise RuntimeError(f"{SETTINGS_ENV} is not set: the SSO authorization function has no settings")
    return found.verifier()


def _unauthorized(reason: str):
    from flask import make_response

    return make_response({"error_code": "UNAUTHENTICATED", "message": f"single sign-on refused: {reason}"}, 401)


def identify(token: str, path: str) -> tuple[str, bool]:
    """Verify an identity header and reconcile its user: (username, is admin). Raises IdentityRejected."""
    if is_machine_path(path):
        raise IdentityRejected("the load balancer never signs client API paths; use basic-auth credentials")
    try:
        identity = _verifier().verify(token)
    except IdentityRejected as exc:
        _log.warning("x-amzn-oidc-data refused on %s: %s", path, exc)
        raise
    try:
        reconcile(identity)
    except IdentityRejected as exc:
        _log.warning("single sign-on refused for %s: %s", identity.username, exc)
        raise
    config = settings()
    return identity.username, bool(config and identity.groups & set(config.admin_groups))


def authenticate():
    """The ``authorization_function`` named in the rendered basic-auth ini."""
    from flask import request
    from mlflow.server.auth import authenticate_request_basic_auth
    from werkzeug.datastructures import Authorization

    token = request.headers.get(HEADER)
    if token is None:
        return authenticate_request_basic_auth()  # SSO users' stored hash matches no password
    verified = request.environ.get(VERIFIED_SSO_USER)  # the edge verified this very header
    if verified:
        return Authorization("bearer", {"username": verified})
    try:
        username, _ = identify(token, request.path)
    except IdentityRejected as exc:
        return _unauthorized(str(exc))
    return Authorization("bearer", {"username": username})


#: Per process: each user's groups at its last reconciliation, and when.
_seen: dict[str, tuple[frozenset[str], float]] = {}
_seen_lock = threading.Lock()


def reconcile(identity: Identity) -> None:
    """Create the user on first sign-in; make its admin flag and team roles match its groups.
    Redone whenever the groups change, and at least every ``cache_seconds``."""
    config = settings()
    assert config is not None
    now = time.monotonic()
    with _seen_lock:
        groups, when = _seen.get(identity.username, (None, -1e9))
        if groups == identity.groups and now - when < config.cache_seconds:
            return
    from mlflow.server import auth

    store = auth.store
    user = _ensure_user(store, identity.username)
    admin = bool(identity.groups & set(config.admin_groups))
    if user.is_admin != admin:
        store.update_user(identity.username, is_admin=admin)
    _sync_roles(store, user.id, identity, config)
    with _seen_lock:
        _seen[identity.username] = (identity.groups, now)


def _ensure_user(store, username: str):
    from mlflow.exceptions import MlflowException

    try:
        user = store.get_user(username)
    except MlflowException:
        user = None
    if user is not None:
        if not is_sso_user(store, username):  # the admin, a machine or team user with a password
            raise IdentityRejected(f"{username!r} is a password user; a person signs in as a separate user")
        return user
    try:
        store.create_user(username, secrets.token_urlsafe(32))
    except MlflowException:  # another worker created it first
        return store.get_user(username)
    _forbid_password(store, username)
    _log.info("created MLflow user %s on first single sign-on", username)
    return store.get_user(username)


def is_sso_user(store, username: str) -> bool:
    """Whether the user was created by a single sign-on (it has no usable password)."""
    from mlflow.server.auth.db.models import SqlUser

    with store.ManagedSessionMaker() as session:
        found = session.query(SqlUser.password_hash).filter(SqlUser.username == username).scalar()
    return found == SSO_ONLY_PASSWORD


def _forbid_password(store, username: str) -> None:
    from mlflow.server.auth.db.models import SqlUser

    with store.ManagedSessionMaker() as session:
        session.query(SqlUser).filter(SqlUser.username == username).update({"password_hash": SSO_ONLY_PASSWORD})


def _sync_roles(store, user_id: int, identity: Identity, config: SsoSettings) -> None:
    from .teams import MANAGED

    wanted = {(r.workspace, r.role) for r in config.team_roles if r.group in identity.groups}
    held = {
        (r.workspace, r.name): r for r in store.list_user_roles(user_id) if (r.description or "").startswith(MANAGED)
    }
    for ws, name in wanted - held.keys():
        try:
            role = store.get_role_by_name(ws, name)
        except Exception:  # noqa: BLE001 - the role is created by `teams sync`; until then there is nothing to assign
            _log.warning("role %s/%s does not exist yet (teams sync has not run): not assigned", ws, name)
            continue
        store.assign_role_to_user(user_id, role.id)
    for key in held.keys() - wanted:
        store.unassign_role_from_user(user_id, held[key].id)


def logout_response(environ: dict, start_response):
    """Expire the ALB's session cookies and hand over to the IdP's logout (AWS: the app must do both)."""
    config = settings()
    target = (config.logout_url if config else None) or "/"
    headers = [("Location", target), ("Cache-Control", "no-store")]
    expired = "=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Secure; HttpOnly"
    headers += [("Set-Cookie", f"{name}{expired}") for name in SESSION_COOKIES]
    start_response("302 Found", headers)
    return [b""]


def refuse_untrusted_peer(environ: dict, start_response):
    body = json.dumps(
        {"error_code": "UNAUTHENTICATED", "message": "single sign-on refused: the request did not come through the ALB"}
    ).encode()
    start_response("401 Unauthorized", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
