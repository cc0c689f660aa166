"""The local platform acting as the ALB: an ES256 key pair in the state dir, the public key stored
under its key id (as the region's key endpoint publishes it; the server reads it from that
directory, so nothing listening on a port can hand it another key), and ``x-amzn-oidc-data``
headers in the ALB's format (signer/kid/exp in the JWT header, padded base64 segments) for a chosen
user and groups. The server verifies them with the same code as behind a real ALB."""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from ..files import private_dir, write_private

#: The local "load balancer": a well-formed ARN no real ALB has.
LOCAL_SIGNER = "arn:aws:elasticloadbalancing:local:000000000000:loadbalancer/app/mlflow-local/0000000000000000"
LOCAL_ISSUER = "https://idp.local.invalid"
LOCAL_CLIENT = "mlflow-local"


def _segment(data: dict) -> bytes:
    """Base64url *with* padding, as the ALB encodes its segments."""
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode())


def sign_alb_header(
    claims: dict, key: ec.EllipticCurvePrivateKey, *, kid: str, signer: str, exp: int, issuer: str, client: str
) -> str:
    header = {"typ": "JWT", "alg": "ES256", "kid": kid, "signer": signer, "iss": issuer, "client": client, "exp": exp}
    signing_input = _segment(header) + b"." + _segment(claims)
    signature = ECAlgorithm(ECAlgorithm.SHA256).sign(signing_input, key)
    return (signing_input + b"." + base64.urlsafe_b64encode(signature)).decode()


@dataclass(frozen=True)
class LocalAlb:
    """Key material under ``<state>/alb``; ``public/`` holds the public key under its key id."""

    directory: Path

    @property
    def public_dir(self) -> Path:
        return self.directory / "public"

    @property
    def _private(self) -> Path:
        return self.directory / "private.pem"

    def ensure_keys(self) -> str:
        """Create the key pair once; return its key id."""
        if not self._private.exists():
            private_dir(self.directory)  # 0700 like the rest of the state dir; the server runs as us
            private_dir(self.public_dir)
            key = ec.generate_private_key(ec.SECP256R1())
            kid = str(uuid.uuid4())
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            public = key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            write_private(self.public_dir / kid, public.decode())
            write_private(self._private, pem.decode())  # last: its presence means the pair is complete
        return self.kid

    @property
    def kid(self) -> str:
        return next(p.name for p in self.public_dir.iterdir())

    def key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self._private.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key

    def header(
        self, username: str, groups: tuple[str, ...] = (), *, username_claim: str = "email", ttl_seconds: int = 120
    ) -> str:
        """A header for ``username`` in ``groups``, valid for ``ttl_seconds`` (the ALB refreshes it per request)."""
        claims = {
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, username)),
            username_claim: username,
            "groups": list(groups),
        }
        return sign_alb_header(
            claims,
            self.key(),
            kid=self.kid,
            signer=LOCAL_SIGNER,
            exp=int(time.time()) + ttl_seconds,
            issuer=LOCAL_ISSUER,
            client=LOCAL_CLIENT,
        )
