"""Locks that serialise registry changes: the guide's Redis lock, or DynamoDB for AWS-native CI.

A lock that cannot be had within its timeout raises LockUnavailable before anything changed.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from ..errors import RunbookError


class LockUnavailable(RunbookError):
    pass


@contextlib.contextmanager
def redis_lock(url: str, key: str, *, ttl: float, timeout: float) -> Iterator[None]:
    import redis

    client = redis.from_url(url, socket_timeout=10)
    lock = client.lock(f"mlflow-platform:lock:{key}", timeout=ttl, blocking_timeout=timeout)
    try:
        acquired = lock.acquire(blocking=True)
    except redis.RedisError as exc:
        raise LockUnavailable(f"cannot reach the lock at {urlparse(url).hostname}: {exc}") from None
    if not acquired:
        raise LockUnavailable(f"lock {key} is held by another promotion; gave up after {timeout:.0f}s")
    try:
        yield
    finally:
        with contextlib.suppress(redis.exceptions.LockError):
            lock.release()  # an expired lock was released by its TTL already


@contextlib.contextmanager
def dynamodb_lock(table: str, key: str, *, ttl: float, timeout: float) -> Iterator[None]:
    """Conditional writes: take the item if absent or expired; release only our own item.

    The table needs a string partition key `lock_key` (the Pulumi program creates it).
    """
    import boto3
    from botocore.exceptions import ClientError

    dynamodb = boto3.client("dynamodb", endpoint_url=os.environ.get("MLFLOW_PLATFORM_DYNAMODB_ENDPOINT_URL"))
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + timeout
    while True:
        now = time.time()
        try:
            dynamodb.put_item(
                TableName=table,
                Item={"lock_key": {"S": key}, "owner": {"S": owner}, "expires_at": {"N": str(int(now + ttl))}},
                ConditionExpression="attribute_not_exists(lock_key) OR expires_at < :now",
                ExpressionAttributeValues={":now": {"N": str(int(now))}},
            )
            break
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise LockUnavailable(f"cannot use lock table {table}: {exc}") from None
            if time.monotonic() >= deadline:
                raise LockUnavailable(
                    f"lock {key} is held by another promotion; gave up after {timeout:.0f}s"
                ) from None
            time.sleep(0.2)
    try:
        yield
    finally:
        with contextlib.suppress(ClientError):
            dynamodb.delete_item(
                TableName=table,
                Key={"lock_key": {"S": key}},
                ConditionExpression="#o = :owner",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={":owner": {"S": owner}},
            )


@contextlib.contextmanager
def file_lock(directory: Path, key: str, *, timeout: float) -> Iterator[None]:
    """An flock on ``<directory>/<key>.lock``: one machine only (the local platform's state dir)."""
    from ..files import flock, private_dir

    path = private_dir(directory) / f"{key.replace('/', '_').replace(':', '_')}.lock"
    try:
        with flock(path, timeout=timeout):
            yield
    except TimeoutError:
        raise LockUnavailable(f"lock {key} is held by another promotion; gave up after {timeout:.0f}s") from None


@contextlib.contextmanager
def no_lock() -> Iterator[None]:
    yield


def lock_for(url: str | None, key: str, *, ttl: float = 60.0, timeout: float = 30.0):
    """`redis://host:port/db`, `dynamodb://<table>`, or `local` (a file lock in the local platform's
    state dir, for trying promotion on one machine); None means no lock (refused outside dry runs)."""
    if url is None:
        return no_lock()
    if url == "local":
        from ..files import default_state_dir

        return file_lock(default_state_dir() / "locks", key, timeout=timeout)
    scheme = urlparse(url).scheme
    if scheme in ("redis", "rediss", "unix"):
        return redis_lock(url, key, ttl=ttl, timeout=timeout)
    if scheme == "dynamodb":
        table = urlparse(url).netloc or urlparse(url).path.lstrip("/")
        if not table:
            raise RunbookError("--lock dynamodb://<table>: name the table")
        return dynamodb_lock(table, key, ttl=ttl, timeout=timeout)
    raise RunbookError(f"--lock {url!r}: use redis://host:port/db, dynamodb://<table>, or local")
