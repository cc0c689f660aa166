"""The ALB's signed identity header (``x-amzn-oidc-data``), verified completely before it is trusted.

After its ``authenticate-oidc`` action the ALB forwards the user's claims as an ES256-signed JWT.
AWS documents the checks ("User claims encoding and signature verification",
https://docs.aws.amazon.com/elasticloadbalancing/latest/application/listener-authenticate-users.html):
the header's ``signer`` must be this load balancer's ARN, the public key is fetched by ``kid``
from the region's key endpoint, and the signature and ``exp`` (in the JWT *header*: the payload is
the IdP's user-info answer) are checked. The segments may carry base64 padding; PyJWT accepts it.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key

HEADER = "x-amzn-oidc-data"
#: The WSGI environ key the edge sets once it verified the header (and the auth hook reads): a
#: client can only set ``HTTP_*`` keys, so it cannot forge this one.
VERIFIED_SSO_USER = "mlflow_platform.sso_user"
#: A key id is a UUID-like token; anything else never reaches the key endpoint's URL.
_KID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def key_endpoint(region: str) -> str:
    """Where a region's ALBs publish their public keys (one PEM per key id)."""
    return f"https://public-keys.auth.elb.{region}.amazonaws.com"


class IdentityRejected(Exception):
    """The header is not one this server's load balancer signed, or no longer valid."""


@dataclass(frozen=True)
class Identity:
    username: str
    groups: frozenset[str]


class PublicKeys:
    """ALB public keys by ``kid``, fetched once each (keys do not change under a kid)."""

    def __init__(self, endpoint: str, *, timeout: float = 5.0, max_keys: int = 64):
        self.endpoint, self.timeout, self.max_keys = endpoint.rstrip("/"), timeout, max_keys
        self._keys: dict[str, ec.EllipticCurvePublicKey] = {}
        self._lock = threading.Lock()

    def get(self, kid: object) -> ec.EllipticCurvePublicKey:
        if not isinstance(kid, str) or not _KID.match(kid):
            raise IdentityRejected("the header's key id is malformed")
        with self._lock:
            if kid in self._keys:
                return self._keys[kid]
        key = self._fetch(kid)
        with self._lock:
            if len(self._keys) >= self.max_keys:
                self._keys.pop(next(iter(self._keys)))
            self._keys[kid] = key
        return key

    def _fetch(self, kid: str) -> ec.EllipticCurvePublicKey:
        try:
            key = load_pem_public_key(self._pem(kid))
        except ValueError:
            raise IdentityRejected(f"the ALB public key {kid!r} is not a PEM key") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise IdentityRejected(f"the ALB public key {kid!r} is not a P-256 key")
        return key

    def _pem(self, kid: str) -> bytes:
        """From the region's key endpoint, or (the local platform) a directory of PEM files named
        by key id: nothing that answers on a port can hand the server a key."""
        if self.endpoint.startswith("file://"):
            path = Path(self.endpoint.removeprefix("file://")) / kid
            if not path.is_file():
                raise IdentityRejected(f"no ALB public key {kid!r}")
            return path.read_bytes()
        try:
            answer = requests.get(f"{self.endpoint}/{kid}", timeout=self.timeout)
        except requests.RequestException as exc:
            raise IdentityRejected(f"the ALB key endpoint is unreachable: {exc.__class__.__name__}") from None
        if answer.status_code != 200:
            raise IdentityRejected(f"no ALB public key {kid!r} (key endpoint answered {answer.status_code})")
        return answer.content


@dataclass(frozen=True)
class Verifier:
    signer: str  # this stack's ALB ARN
    keys: PublicKeys
    username_claim: str = "email"
    groups_claim: str = "groups"
    issuer: str | None = None
    client_id: str | None = None
    leeway_seconds: int = 0

    def verify(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise IdentityRejected("the header is not a JWT") from None
        self._check_header(header)
        key = self.keys.get(header.get("kid"))
        try:
            claims = jwt.decode(
                token, key, algorithms=["ES256"], options={"verify_aud": False}, leeway=self.leeway_seconds
            )
        except jwt.InvalidSignatureError:
            raise IdentityRejected("the signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise IdentityRejected(f"the claims are invalid: {exc}") from None
        return Identity(self._username(claims), self._groups(claims))

    def _check_header(self, header: dict) -> None:
        if header.get("alg") != "ES256":
            raise IdentityRejected(f"algorithm {header.get('alg')!r} is not ES256")
        if header.get("signer") != self.signer:
            raise IdentityRejected("signed by another load balancer")
        exp = header.get("exp")
        if not isinstance(exp, int) or isinstance(exp, bool):
            raise IdentityRejected("the header has no expiry")
        if exp + self.leeway_seconds < time.time():
            raise IdentityRejected("expired")
        if self.issuer is not None and header.get("iss") not in (self.issuer, self.issuer.rstrip("/")):
            raise IdentityRejected("issued by another identity provider")
        if self.client_id is not None and header.get("client") != self.client_id:
            raise IdentityRejected("issued for another client")

    def _username(self, claims: dict) -> str:
        value = claims.get(self.username_claim)
        if not isinstance(value, str) or not value.strip():
            raise IdentityRejected(f"the claims have no {self.username_claim!r}")
        return value.strip()

    def _groups(self, claims: dict) -> frozenset[str]:
        value = claims.get(self.groups_claim, ())
        if isinstance(value, str):  # some IdPs send one comma-separated string
            value = value.split(",")
        if not isinstance(value, list | tuple):
            raise IdentityRejected(f"claim {self.groups_claim!r} is not a list of groups")
        return frozenset(str(g).strip() for g in value if str(g).strip())
