"""Schema upgrades as MLflow 3 requires them for SQL backends: decided by comparing the database's
revision with the image's, and when they differ, coordinated (writers stopped, a restorable backup,
migrate, verify) rather than rolled, since MLflow does not support mixed-version servers."""

from __future__ import annotations


class UpgradeError(Exception):
    """An upgrade step failed or was refused; the message says what to do next."""
