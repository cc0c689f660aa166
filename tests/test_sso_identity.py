"""The ALB identity header's verification and the browser/client path split, without a server.

Headers are signed the way the ALB signs them (ES256, signer/kid/exp in the JWT header, padded
base64 segments; AWS, "User claims encoding and signature verification") and the public key is
fetched over HTTP from a key endpoint this test serves, as the server fetches the region's.
"""

from __future__ import annotations

import functools
import http.server
import threading
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from mlflow_platform.alb_identity import IdentityRejected, PublicKeys, Verifier
from mlflow_platform.local.alb_signer import LOCAL_CLIENT, LOCAL_ISSUER, LOCAL_SIGNER, LocalAlb, sign_alb_header
from mlflow_platform.sso import MACHINE_PATHS, alb_pattern_matches, is_machine_path

OTHER_ALB = "arn:aws:elasticloadbalancing:eu-west-1:111122223333:loadbalancer/app/someone-else/1234567890abcdef"


@pytest.fixture(scope="module")
def alb(tmp_path_factory) -> LocalAlb:
    local = LocalAlb(tmp_path_factory.mktemp("alb"))
    local.ensure_keys()
    return local


@pytest.fixture(scope="module")
def key_endpoint(alb: LocalAlb):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(alb.public_dir))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def verifier(key_endpoint: str) -> Verifier:
    return Verifier(signer=LOCAL_SIGNER, keys=PublicKeys(key_endpoint), issuer=LOCAL_ISSUER, client_id=LOCAL_CLIENT)


def _signed(alb: LocalAlb, claims: dict | None = None, **override) -> str:
    fields = dict(kid=alb.kid, signer=LOCAL_SIGNER, exp=int(time.time()) + 60, issuer=LOCAL_ISSUER, client=LOCAL_CLIENT)
    fields.update(override)
    key = fields.pop("key", alb.key())
    return sign_alb_header(claims or {"email": "ana@example.com", "groups": ["g1", "g2"]}, key, **fields)


def test_a_valid_header_yields_the_user_and_groups(alb: LocalAlb, verifier: Verifier) -> None:
    token = _signed(alb)
    assert "=" in token  # padded segments, as the ALB sends them
    identity = verifier.verify(token)
    assert identity.username == "ana@example.com" and identity.groups == {"g1", "g2"}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"key": ec.generate_private_key(ec.SECP256R1())}, "signature does not verify"),  # forged
        ({"exp": int(time.time()) - 1}, "expired"),
        ({"signer": OTHER_ALB}, "another load balancer"),
        ({"kid": "00000000-0000-0000-0000-000000000000"}, "no ALB public key"),  # unknown key id
        ({"kid": "../../etc/passwd"}, "malformed"),
        ({"issuer": "https://evil.example.com"}, "another identity provider"),
        ({"client": "another-client"}, "another client"),
    ],
)
def test_a_header_that_is_not_this_albs_is_rejected(
    alb: LocalAlb, verifier: Verifier, change: dict, reason: str
) -> None:
    with pytest.raises(IdentityRejected, match=reason):
        verifier.verify(_signed(alb, **change))


def test_a_token_signed_with_another_algorithm_or_garbage_is_rejected(alb: LocalAlb, verifier: Verifier) -> None:
    hs = jwt.encode({"email": "x"}, "s" * 32, algorithm="HS256", headers={"signer": LOCAL_SIGNER, "kid": alb.kid})
    with pytest.raises(IdentityRejected, match="not ES256"):
        verifier.verify(hs)
    with pytest.raises(IdentityRejected, match="not a JWT"):
        verifier.verify("garbage")
    tampered = _signed(alb).split(".")
    tampered[1] = _signed(alb, {"email": "admin@example.com", "groups": ["mlflow-admins"]}).split(".")[1]
    with pytest.raises(IdentityRejected, match="signature"):
        verifier.verify(".".join(tampered))


def test_claims_without_the_username_claim_are_rejected_and_string_groups_are_split(
    alb: LocalAlb, verifier: Verifier
) -> None:
    with pytest.raises(IdentityRejected, match="no 'email'"):
        verifier.verify(_signed(alb, {"sub": "123"}))
    assert verifier.verify(_signed(alb, {"email": "a@x", "groups": "g1, g2"})).groups == {"g1", "g2"}


def test_keys_are_fetched_once_per_kid(alb: LocalAlb, key_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = PublicKeys(key_endpoint)
    fetched: list[str] = []
    original = keys._fetch
    monkeypatch.setattr(keys, "_fetch", lambda kid: fetched.append(kid) or original(kid))
    verifier = Verifier(signer=LOCAL_SIGNER, keys=keys)
    for _ in range(3):
        verifier.verify(_signed(alb))
    assert fetched == [alb.kid]


# -- the browser/client split --------------------------------------------------------------------


def _mlflow_routes() -> list[str]:
    """Every route MLflow 3.17.2 serves: Flask's URL map and the FastAPI app's own routes."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mlflow.server import app
        from mlflow.server.fastapi_app import create_fastapi_app
    from mlflow_platform.routes import _fastapi_routes

    flask_routes = [r.rule for r in app.url_map.iter_rules()]
    native = [template for template, _ in _fastapi_routes(create_fastapi_app(app).router.routes)]
    return [_concrete(p) for p in flask_routes + native]


def _concrete(template: str) -> str:
    """A request path for a route template (``<path:x>``, ``{x}`` become a value)."""
    import re

    return re.sub(r"<[^>]+>|\{[^}]+\}", "x", template)


#: Routes a client (the mlflow package, OTLP exporters, gateway callers) calls; the ALB must not
#: redirect them to a login page.
def _client_route(path: str) -> bool:
    return path.startswith(("/api/", "/gateway/")) or path in ("/v1/traces", "/health")


def test_every_mlflow_route_is_on_the_intended_side_of_the_login() -> None:
    routes = _mlflow_routes()
    assert len(routes) > 300 and "/ajax-api/2.0/mlflow/runs/search" in routes and "/v1/traces" in routes
    wrong = [p for p in routes if is_machine_path(p) != _client_route(p)]
    assert wrong == []
    browser = [p for p in routes if not is_machine_path(p)]
    # The UI, its API, static files and artifact views are behind the login.
    for path in ("/", "/ajax-api/2.0/mlflow/experiments/search", "/static-files/x", "/get-artifact", "/graphql"):
        assert path in browser


def test_the_ui_bundle_calls_only_browser_paths() -> None:
    """The UI's requests go to /ajax-api/ (behind the login). Its only other API strings, checked
    in MLflow 3.17.2's bundle: an OTLP code sample shown to users, the gateway proxy's
    ``gateway_path`` argument (sent to an /ajax-api/ route) and an artifact-URI prefix it parses."""
    import re

    import mlflow.server

    build = Path(mlflow.server.__file__).parent / "js" / "build" / "static" / "js"
    text = "".join(p.read_text(errors="ignore") for p in build.glob("*.js"))
    others = set(re.findall(r"(?<!ajax-)api/[23]\.0/[A-Za-z0-9/_.-]*", text))
    assert others == {"api/2.0/otel/v1/traces", "api/2.0/endpoints/", "api/2.0/mlflow-artifacts/artifacts/"}
    assert text.count("ajax-api/") > 100


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [  # AWS: path patterns are case-sensitive; * matches 0 or more characters, ? exactly one
        ("/api/*", "/api/2.0/mlflow/runs/get", True),
        ("/api/*", "/API/2.0/x", False),
        ("/api/*", "/ajax-api/2.0/x", False),
        ("/api/*", "/api/", True),
        ("/v1/traces", "/v1/traces/x", False),
        ("/img/?.png", "/img/a.png", True),
        ("/img/?.png", "/img/ab.png", False),
    ],
)
def test_alb_path_pattern_semantics(pattern: str, path: str, matches: bool) -> None:
    assert alb_pattern_matches(pattern, path) is matches


def test_machine_paths_fit_one_listener_rule() -> None:
    """An ALB rule takes at most five condition values."""
    assert 0 < len(MACHINE_PATHS) <= 5


def test_a_key_directory_serves_keys_by_kid_and_nothing_else(alb: LocalAlb) -> None:
    """The local platform's endpoint: a directory in its state dir, so no process that answers on a
    port can hand the server a key (a key server that died left its port to anyone)."""
    verifier = Verifier(signer=LOCAL_SIGNER, keys=PublicKeys(f"file://{alb.public_dir}"))
    assert verifier.verify(_signed(alb)).username == "ana@example.com"
    stranger = ec.generate_private_key(ec.SECP256R1())
    for kid in ("no-such-key", "../private.pem", "..", "a/b"):
        with pytest.raises(IdentityRejected):
            verifier.verify(_signed(alb, kid=kid, key=stranger))
