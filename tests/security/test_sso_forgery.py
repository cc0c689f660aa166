"""Forged identity headers: none of them signs anybody in, whatever else the request carries, and
the local server trusts no key but its own ALB's (item 5)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import os
import signal
import threading
import time

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mlflow_platform.local.alb_signer import LOCAL_CLIENT, LOCAL_ISSUER, LOCAL_SIGNER, sign_alb_header
from mlflow_platform.local.platform import LocalPlatform

SEARCH = "/ajax-api/2.0/mlflow/experiments/search?max_results=1"
ADMINS = ("mlflow-admins",)


def _get(platform: LocalPlatform, header: str) -> int:
    answer = requests.get(platform.tracking_uri() + SEARCH, headers={"x-amzn-oidc-data": header}, timeout=20)
    return answer.status_code


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _hs256(header: dict, claims: dict, secret: bytes) -> str:
    """The algorithm-confusion forgery: an HMAC keyed with the published public key."""
    signing_input = f"{_b64(header)}.{_b64(claims)}".encode()
    signature = base64.urlsafe_b64encode(hmac.new(secret, signing_input, hashlib.sha256).digest()).decode().rstrip("=")
    return f"{signing_input.decode()}.{signature}"


def _claims(username: str = "mallory@example.com") -> dict:
    return {"sub": "x", "email": username, "groups": list(ADMINS)}


def _header(kid: str, **extra) -> dict:
    return {
        "alg": "ES256",
        "kid": kid,
        "signer": LOCAL_SIGNER,
        "iss": LOCAL_ISSUER,
        "client": LOCAL_CLIENT,
        "exp": int(time.time()) + 120,
        **extra,
    }


def _sign(key, kid: str, *, signer: str = LOCAL_SIGNER, ttl: int = 120, username: str = "mallory@example.com") -> str:
    return sign_alb_header(
        _claims(username),
        key,
        kid=kid,
        signer=signer,
        exp=int(time.time()) + ttl,
        issuer=LOCAL_ISSUER,
        client=LOCAL_CLIENT,
    )


def test_forged_headers_sign_nobody_in(platform: LocalPlatform) -> None:
    kid = platform.alb.kid
    public = (platform.alb.public_dir / kid).read_bytes()
    other = ec.generate_private_key(ec.SECP256R1())
    forged = {
        "alg none": f"{_b64(_header(kid, alg='none'))}.{_b64(_claims())}.",
        "HS256 keyed with the public key": _hs256(_header(kid, alg="HS256"), _claims(), public),
        "another key, same kid": _sign(other, kid),
        "kid traversal": _sign(other, "../public/" + kid),
        "expired": _sign(platform.alb.key(), kid, ttl=-5),
        "another signer": _sign(platform.alb.key(), kid, signer=LOCAL_SIGNER + "x"),
        "oversized": "a" * 20000,
    }
    for what, header in forged.items():
        assert _get(platform, header) in (400, 401, 431), what
    assert _get(platform, platform.alb.header("ok@example.com", ("search-engineers",))) == 200  # the control


class _KeyServer(http.server.BaseHTTPRequestHandler):
    pem = b""

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.end_headers()
        self.wfile.write(self.pem)

    def log_message(self, *args):
        pass


def test_whoever_answers_on_a_local_port_mints_no_admin(platform: LocalPlatform) -> None:
    """The attacker binds the port the local key server used (or any port) and serves its own key
    under a new kid; the server must not take it."""
    attacker = ec.generate_private_key(ec.SECP256R1())
    _KeyServer.pem = attacker.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pid = platform.state.pids.get("alb-keys")
    if pid:  # before the fix: the local key server; it "died"
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
    port = getattr(platform.state.ports, "alb_keys", 0)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _KeyServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        header = _sign(attacker, "attacker-key")
        assert _get(platform, header) == 401
    finally:
        server.shutdown()
        server.server_close()
    if pid:
        pytest.fail("the local platform still runs a key server whose port anyone can take")
