"""``<state>/secrets.json``: generated once, never silently replaced.

Generating new secrets over existing data locks the user out of their own database (the
PostgreSQL superuser password is baked into the data directory), so a missing file while data
exists is refused, not regenerated. Keys that are re-applied on every start (the S3 identity,
the object store's JWT keys) are filled in when an older file lacks them.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from pathlib import Path

from ..errors import PlatformError
from ..files import private_dir, read_json, write_private
from .object_store import JWT_KEYS, new_jwt_keys

MIN_ADMIN_PASSWORD = 12  # MLflow's basic-auth refuses shorter admin passwords
#: Baked into the data on first start: losing it means losing access.
IRREPLACEABLE = ("postgres_superuser_password",)


def _generate() -> dict[str, str]:
    return {
        "postgres_superuser_password": secrets.token_urlsafe(24),
        "db_password": secrets.token_urlsafe(24),  # the schema owner
        "app_db_password": secrets.token_urlsafe(24),  # the server's DML-only role
        "flask_secret_key": secrets.token_hex(32),
        "admin_password": secrets.token_urlsafe(18),
        "s3_access_key_id": "local" + secrets.token_hex(6),
        "s3_secret_access_key": secrets.token_urlsafe(30),
        **{f"s3_{name}": value for name, value in new_jwt_keys().items()},
    }


class SecretsFile:
    def __init__(self, path: Path, has_data: Callable[[], bool]):
        self.path = path
        self._has_data = has_data

    def load(self) -> dict[str, str]:
        if not self.path.exists():
            return self._create()
        values = read_json(
            self.path,
            f"restore it from a backup, or reset with `mlflow-platform local down "
            f"--purge --state-dir {self.path.parent}` (deletes all local data)",
        )
        return self._complete(values)

    def jwt_keys(self, values: dict[str, str]) -> dict[str, str]:
        return {name: values[f"s3_{name}"] for name in JWT_KEYS}

    def _create(self) -> dict[str, str]:
        if self._has_data():
            raise PlatformError(
                f"{self.path} is missing but {self.path.parent} holds data; new secrets would lock you out "
                "of it. Restore the file from a backup, or reset with `mlflow-platform local down --purge "
                f"--state-dir {self.path.parent}` (deletes all local data)"
            )
        values = _generate()
        private_dir(self.path.parent)
        write_private(self.path, json.dumps(values, indent=2))
        return values

    def _complete(self, values: dict) -> dict[str, str]:
        lost = [key for key in IRREPLACEABLE if not values.get(key)]
        if lost:
            raise PlatformError(
                f"{self.path} lacks {', '.join(lost)}; restore the file from a backup, or reset "
                f"with `mlflow-platform local down --purge --state-dir {self.path.parent}`"
            )
        admin = values.get("admin_password")
        if admin is not None and len(str(admin)) < MIN_ADMIN_PASSWORD:
            raise PlatformError(
                f"{self.path}: admin_password has {len(str(admin))} characters; MLflow needs at least "
                f"{MIN_ADMIN_PASSWORD}. Set a longer one there and run `mlflow-platform local up` again"
            )
        missing = {key: value for key, value in _generate().items() if key not in values}
        if missing:
            values = {**values, **missing}
            write_private(self.path, json.dumps(values, indent=2))
        return {key: str(value) for key, value in values.items()}
