"""Where `teams sync` keeps the passwords it generates for new users: a private file in the local
platform's state dir, or one Secrets Manager secret per user in AWS. Never the stack file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass
class PasswordFile:
    """``<state>/team_passwords.json``, 0600 like the platform's other secrets."""

    path: Path

    def _all(self) -> dict[str, str]:
        from .files import read_json

        return (
            read_json(self.path, "restore it from a backup, or delete it and reset the users' passwords")
            if (self.path.exists())
            else {}
        )

    def get(self, username: str) -> str | None:
        return self._all().get(username)

    def put(self, username: str, password: str) -> None:
        from .files import write_private

        write_private(self.path, json.dumps({**self._all(), username: password}, indent=2) + "\n")


@dataclass
class SecretsManagerPasswords:
    """``<prefix><username>`` in Secrets Manager (e.g. ``mlflow-prod/users/alice``)."""

    prefix: str

    def _client(self):
        import boto3

        return boto3.client("secretsmanager")

    def get(self, username: str) -> str | None:
        client = self._client()
        try:
            return client.get_secret_value(SecretId=self.prefix + username)["SecretString"]
        except client.exceptions.ResourceNotFoundException:
            return None

    def put(self, username: str, password: str) -> None:
        client = self._client()
        try:
            client.put_secret_value(SecretId=self.prefix + username, SecretString=password)
        except client.exceptions.ResourceNotFoundException:
            client.create_secret(
                Name=self.prefix + username,
                SecretString=password,
                Description=f"MLflow password of {username}, created by mlflow-platform teams sync",
                Tags=[{"Key": "managed-by", "Value": "mlflow-platform"}],
            )
